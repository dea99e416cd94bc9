"""Django's RedisCache and django-redis on SafeConnectionPool: get/set, 503 when Redis dies, bounded connections."""

from __future__ import annotations

import io
import logging
import json
import os
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

import redis_safepool as sp
from redis_safepool.testing import RedisServer

django = pytest.importorskip("django")
pytest.importorskip("django_redis")

REAL_POOL = hasattr(sp, "SafeConnectionPool")
POOL_PATH = "redis_safepool.SafeConnectionPool" if REAL_POOL else "redis.BlockingConnectionPool"
POOL_CLASS = getattr(sp, "SafeConnectionPool", redis.BlockingConnectionPool)
MAX_CONNECTIONS = 4
ALIASES = ["default", "djredis"]

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def server():
    """One redis-server for the module (Django's settings are process-wide), on a fixed port."""
    srv = RedisServer().start()
    os.environ["SAFEPOOL_TEST_REDIS_URL"] = srv.url
    os.environ["SAFEPOOL_TEST_POOL_CLASS"] = POOL_PATH
    os.environ["SAFEPOOL_TEST_MAX_CONNECTIONS"] = str(MAX_CONNECTIONS)
    os.environ["DJANGO_SETTINGS_MODULE"] = "django_project.settings"
    from django.conf import settings

    if settings.configured and getattr(settings, "REDIS_URL", None) not in (None, srv.url):
        pytest.skip("Django settings were configured by another module")
    django.setup()
    yield srv
    srv.stop()


@pytest.fixture
def live(server, wait_until):
    """The server running and every backend answering again (a test may have killed it)."""
    from django.core.cache import caches

    server.start()

    def healthy():
        try:
            for alias in ALIASES:
                caches[alias].set("probe", 1)
            return True
        except redis.exceptions.RedisError:
            return False
        except Exception as exc:  # django-redis wraps errors in ConnectionInterrupted
            if type(exc).__name__ == "ConnectionInterrupted":
                return False
            raise

    wait_until(healthy, what="caches answering")
    server.command("FLUSHALL")
    return server


@pytest.fixture
def client(live):
    from django.test import Client

    return Client(raise_request_exception=False)


def _pool(alias):
    from django.core.cache import caches

    cache = caches[alias]
    if alias == "default":
        return cache._cache.get_client(write=True).connection_pool
    return cache.client.get_client(write=True).connection_pool


@pytest.mark.parametrize("alias", ALIASES)
def test_cache_get_set_through_views(client, alias):
    r = client.get(f"/cache/{alias}/greeting/", {"set": "hello"})
    assert r.status_code == 200 and r.json() == {"key": "greeting", "value": "hello"}
    r = client.get(f"/cache/{alias}/greeting/")
    assert r.json()["value"] == "hello"
    assert [client.get(f"/hit/{alias}/").json()["hits"] for _ in range(3)] == [1, 2, 3]


@pytest.mark.parametrize("alias", ALIASES)
def test_backend_builds_our_pool_with_options(live, alias):
    pool = _pool(alias)
    assert type(pool) is POOL_CLASS
    assert pool.max_connections == MAX_CONNECTIONS
    assert pool.timeout == 2
    # the options are pool options, not connection kwargs
    assert "timeout" not in pool.connection_kwargs
    assert pool.connection_kwargs["port"] == live.port


def test_django_redis_password_reset_keeps_pool_usable(live):
    """django-redis sets connection_kwargs["password"] then calls reset(): the pool must still work."""
    from django_redis.pool import ConnectionFactory

    factory = ConnectionFactory({"CONNECTION_POOL_CLASS": POOL_PATH,
                                 "CONNECTION_POOL_KWARGS": {"max_connections": MAX_CONNECTIONS}})
    pool = factory.get_connection_pool({"url": live.url, "parser_class": redis.connection.DefaultParser})
    try:
        assert "password" in pool.connection_kwargs
        r = redis.Redis(connection_pool=pool)
        assert r.set("pw", "ok") and r.get("pw") == b"ok"
        pool.reset()
        assert r.get("pw") == b"ok"
    finally:
        pool.close() if hasattr(pool, "close") else pool.disconnect()


@pytest.mark.parametrize("alias", ALIASES)
def test_server_killed_gives_503_then_200_when_back(client, live, alias, wait_until):
    assert client.get(f"/hit/{alias}/").status_code == 200
    live.kill()
    r = client.get(f"/hit/{alias}/")
    assert r.status_code == 503
    assert r["Retry-After"] == "1"
    assert r["Content-Type"] == "application/json"
    body = r.json()
    assert body["error"] in {"redis_unavailable", "redis_connection_error", "redis_pool_timeout"}
    assert body["detail"]
    if REAL_POOL:
        # once the health checker has seen the server down, requests are refused without I/O
        wait_until(lambda: client.get(f"/hit/{alias}/").json().get("type") == "ServerUnavailableError",
                   what="ServerUnavailableError")
    live.start()
    wait_until(lambda: client.get(f"/hit/{alias}/").status_code == 200, what="200 after restart")


def test_non_redis_errors_stay_500(client):
    assert client.get("/boom/").status_code == 500


def test_stats_view_and_management_command(client, live):
    from django.core.management import call_command

    assert client.get("/hit/default/").status_code == 200
    out = io.StringIO()
    call_command("safepool_stats", stdout=out)
    table = out.getvalue()
    out = io.StringIO()
    call_command("safepool_stats", "--json", stdout=out)
    stats = json.loads(out.getvalue())
    out = io.StringIO()
    call_command("safepool_stats", "--explain", stdout=out)
    explained = out.getvalue()
    view = client.get("/safepool/stats/").json()
    if not REAL_POOL:
        assert stats == {} and "no redis-safepool endpoints" in table
        return
    label = f"redis://127.0.0.1:{live.port}/0"
    assert label in stats and label in view and label in table and label in explained
    assert stats[label]["max_connections"] == MAX_CONNECTIONS
    assert "limits:" in explained and "why:" in explained


def test_system_check_flags_plain_pools(live):
    from django.test import override_settings

    from redis_safepool.django.apps import check_caches

    assert check_caches() == [] or not REAL_POOL
    plain = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                         "LOCATION": live.url}}
    with override_settings(CACHES=plain):
        ids = [m.id for m in check_caches()]
    assert ids == ["redis_safepool.W001"]


@pytest.mark.filterwarnings("ignore::redis_safepool.observe.PoolPerRequestWarning")
@pytest.mark.parametrize("alias", ALIASES)
def test_threaded_server_keeps_connections_bounded(live, alias, wait_until):
    """Django's built-in backend makes a pool per thread (the threaded server: per request);
    the endpoint budget still bounds what the server sees."""
    if not REAL_POOL:
        pytest.skip("the stand-in pool has no process-wide budget")
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

    httpd = ThreadedWSGIServer(("127.0.0.1", 0), WSGIRequestHandler, allow_reuse_address=True)
    httpd.set_app(WSGIHandler())
    serving = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    serving.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    peak = [0]
    done = threading.Event()

    label = f"redis://127.0.0.1:{live.port}/0"
    closed_before = sp.stats()[label]["closed"]
    client_peak = [0]

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], live.connected_clients())
            st = sp.stats()[label]
            client_peak[0] = max(client_peak[0], st["in_use"] + st["idle"] + st["connecting"])

    def request(_):
        try:
            with urllib.request.urlopen(f"{base}/hit/{alias}/", timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=24) as ex:
            results = list(ex.map(request, range(240)))
    finally:
        done.set()
        watcher.join(timeout=10)
        httpd.shutdown()
        httpd.server_close()
    statuses = [s for s, _ in results]
    assert set(statuses) <= {200, 503}
    assert all(body["type"] == "PoolTimeoutError" for s, body in results if s == 503)
    ok = statuses.count(200)
    assert ok > 0
    assert int(live.command("GET", f":1:hits:{alias}").split(b"\r\n")[1]) == ok
    assert client_peak[0] <= MAX_CONNECTIONS
    # The server may still count a connection the client already closed (a flavor hand-off
    # closes one and opens another), so its view may exceed the budget by the closes in flight.
    closes = sp.stats()[label]["closed"] - closed_before
    assert peak[0] <= MAX_CONNECTIONS + closes, (peak[0], closes)
    wait_until(lambda: live.connected_clients() <= MAX_CONNECTIONS, what="server count within budget")


@pytest.mark.skipif(not REAL_POOL, reason="the example uses SafeConnectionPool")
def test_example_project_runs_with_one_command():
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    out = subprocess.run([sys.executable, os.path.join(root, "examples", "django_project", "run.py"),
                          "--smoke"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "/ 200" in out.stdout and "/safepool/stats/ 200" in out.stdout


def test_503_body_and_log_never_carry_an_echoed_password(server, caplog, wait_until):
    """A listener that echoes AUTH back: the middleware's 503 body and log line stay clean."""
    if not REAL_POOL:
        pytest.skip("needs the C core")
    from django.test import RequestFactory

    from redis_safepool.django.middleware import SafePoolMiddleware
    from hostile import EchoListener

    secret = "Dj4ngo-Secret-Pw"
    caplog.set_level(logging.DEBUG)
    middleware = SafePoolMiddleware(lambda request: None)
    with EchoListener("LOADING") as listener:
        pool = POOL_CLASS.from_url(listener.url(secret), max_connections=2, timeout=0.2)
        r = redis.Redis(connection_pool=pool)
        bodies = []
        try:
            for _ in range(20):  # bounded: until the pool fails fast on its own
                try:
                    r.ping()
                except redis.RedisError as exc:
                    response = middleware.process_exception(RequestFactory().get("/hit/"), exc)
                    assert response is not None and response.status_code == 503
                    bodies.append(response.content.decode())
        finally:
            pool.close()
    assert bodies
    for text in bodies + [caplog.text]:
        assert secret not in text and secret[:8] not in text, text
