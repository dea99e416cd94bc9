"""redis_safepool.flask.SafePool: config, shared client, 503s, clean close, Flask-Caching, threaded server under restarts."""

from __future__ import annotations

import gc
import json
import threading
import urllib.error
import urllib.request

import pytest
import redis

import redis_safepool as sp

flask = pytest.importorskip("flask")

from redis_safepool.flask import SafePool  # noqa: E402

REAL_POOL = hasattr(sp, "SafeConnectionPool")
POOL_CLASS = getattr(sp, "SafeConnectionPool", redis.BlockingConnectionPool)


def make_app(url, **config):
    app = flask.Flask("safepool-test")
    app.config.update(REDIS_URL=url, REDIS_MAX_CONNECTIONS=4, REDIS_POOL_TIMEOUT=2, **config)
    ext = SafePool(app, pool_class=POOL_CLASS)

    @app.route("/hit")
    def hit():
        return {"hits": ext.client.incr("hits")}

    @app.route("/raise/<name>")
    def raise_(name):
        raise {"unavailable": sp.ServerUnavailableError("endpoint paused: connection refused"),
               "timeout": sp.PoolTimeoutError("Timed out after 2.000s waiting"),
               "value": ValueError("not redis")}[name]

    return app, ext


@pytest.fixture
def app_ext(redis_server):
    app, ext = make_app(redis_server.url)
    yield app, ext
    ext.close(app)


def test_config_builds_pool_and_client(app_ext, redis_server):
    app, ext = app_ext
    client = app.extensions["safepool"]
    assert isinstance(client, redis.Redis)
    assert ext.get_client(app) is client
    with app.app_context():
        assert ext.client is client and ext.pool is client.connection_pool
    pool = client.connection_pool
    assert type(pool) is POOL_CLASS
    assert pool.max_connections == 4 and pool.timeout == 2
    assert pool.connection_kwargs["port"] == redis_server.port
    assert "timeout" not in pool.connection_kwargs


def test_requests_use_the_shared_client(app_ext):
    app, _ = app_ext
    c = app.test_client()
    assert [c.get("/hit").json["hits"] for _ in range(3)] == [1, 2, 3]


@pytest.mark.parametrize("name,code", [("unavailable", "redis_unavailable"), ("timeout", "redis_pool_timeout")])
def test_pool_errors_become_503_with_retry_after(app_ext, name, code):
    app, _ = app_ext
    r = app.test_client().get(f"/raise/{name}")
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "1"
    assert r.json["error"] == code and r.json["detail"]


def test_other_errors_stay_500(app_ext):
    app, _ = app_ext
    assert app.test_client().get("/raise/value").status_code == 500


def test_only_pool_errors_when_configured(redis_server):
    app, ext = make_app(redis_server.url, REDIS_503_ON_CONNECTION_ERRORS=False, REDIS_RETRY_AFTER=7)

    @app.route("/plain")
    def plain():
        raise redis.exceptions.ConnectionError("reset by peer")

    try:
        c = app.test_client()
        assert c.get("/plain").status_code == 500
        r = c.get("/raise/unavailable")
        assert r.status_code == 503 and r.headers["Retry-After"] == "7"
    finally:
        ext.close(app)


def test_server_killed_503_then_back(app_ext, redis_server, wait_until):
    app, _ = app_ext
    c = app.test_client()
    assert c.get("/hit").status_code == 200
    redis_server.kill()
    r = c.get("/hit")
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    if REAL_POOL:
        wait_until(lambda: c.get("/hit").json["type"] == "ServerUnavailableError",
                   what="fail-fast ServerUnavailableError")
    redis_server.start()
    wait_until(lambda: c.get("/hit").status_code == 200, what="200 after restart")


def test_init_app_factory_pattern_two_apps(redis_server_factory):
    s1, s2 = redis_server_factory(), redis_server_factory()
    ext = SafePool(pool_class=POOL_CLASS)
    apps = []
    for s in (s1, s2):
        app = flask.Flask(f"app{s.port}")
        app.config["REDIS_URL"] = s.url
        ext.init_app(app)
        apps.append(app)
    try:
        for app, s in zip(apps, (s1, s2)):
            with app.app_context():
                ext.client.set("who", s.port)
        assert s1.command("GET", "who").endswith(f"{s1.port}\r\n".encode())
        assert s2.command("GET", "who").endswith(f"{s2.port}\r\n".encode())
        with pytest.raises(RuntimeError):
            ext.init_app(apps[0])
    finally:
        for app in apps:
            ext.close(app)


def test_close_releases_server_connections(redis_server, wait_until):
    app, ext = make_app(redis_server.url)
    c = app.test_client()
    assert c.get("/hit").status_code == 200
    assert redis_server.connected_clients() >= 1
    pool = ext.get_client(app).connection_pool
    ext.close(app)
    assert "safepool" not in app.extensions
    ext.close(app)  # idempotent
    wait_until(lambda: redis_server.connected_clients() == 0, what="connections closed")
    if REAL_POOL:
        with pytest.raises(sp.PoolClosedError):
            pool.get_connection()


def test_app_collected_closes_pool(redis_server, wait_until):
    app, ext = make_app(redis_server.url)
    assert app.test_client().get("/hit").status_code == 200
    del app, ext
    gc.collect()
    wait_until(lambda: redis_server.connected_clients() == 0, what="connections closed on collect")


@pytest.mark.parametrize("backend, url", [("RedisCache", False),
                                          ("redis_safepool.flask_caching.RedisCache", True)])
def test_flask_caching_shares_the_pool(redis_server, backend, url):
    flask_caching = pytest.importorskip("flask_caching")
    app, ext = make_app(redis_server.url)
    app.config.update(CACHE_TYPE=backend, CACHE_OPTIONS=ext.cache_options(app))
    if url:  # this package's backend takes the given pool over the URL
        app.config.update(CACHE_REDIS_URL=redis_server.url)
    cache = flask_caching.Cache(app)
    calls = []

    @app.route("/cached")
    @cache.cached(timeout=60)
    def cached():
        calls.append(1)
        return {"n": len(calls)}

    try:
        assert cache.cache._write_client.connection_pool is ext.get_client(app).connection_pool
        c = app.test_client()
        assert c.get("/cached").json == {"n": 1}
        assert c.get("/cached").json == {"n": 1}
        assert calls == [1]
        with app.app_context():
            cache.set("k", {"a": 1})
            assert cache.get("k") == {"a": 1}
    finally:
        ext.close(app)


def test_threaded_server_while_redis_restarts(redis_server, wait_until):
    """Concurrent requests to a threaded Werkzeug server across three Redis restarts:
    only 200 or 503 (never 500), service comes back, connections stay within the budget."""
    from werkzeug.serving import make_server

    app, ext = make_app(redis_server.url)
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    serving.start()
    url = f"http://127.0.0.1:{httpd.server_port}/hit"
    lock = threading.Lock()
    statuses = {}
    stop = threading.Event()
    peak = [0]

    def get():
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                json.loads(resp.read())
                code = resp.status
        except urllib.error.HTTPError as err:
            code = err.code
            if code == 503 and not (json.loads(err.read())["error"].startswith("redis_")
                                    and err.headers["Retry-After"] == "1"):
                code = "malformed 503"
        except Exception as exc:  # recorded, so the assertion below reports it
            code = repr(exc)
        with lock:
            statuses[code] = statuses.get(code, 0) + 1
        return code

    def worker():
        for _ in range(2000):  # bounded; normally ended by `stop`
            if stop.is_set():
                return
            get()

    def ok_count():
        with lock:
            return statuses.get(200, 0)

    label = ext.get_client(app).connection_pool.endpoint if REAL_POOL else None
    closed_before = sp.stats()[label]["closed"] if REAL_POOL else 0
    client_peak = [0]

    def watch():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], redis_server.connected_clients())
            except (OSError, KeyError):  # the server is restarting
                pass
            st = sp.stats()[label]
            client_peak[0] = max(client_peak[0], st["in_use"] + st["idle"] + st["connecting"])

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(12)]
    if REAL_POOL:
        workers.append(threading.Thread(target=watch, daemon=True))
    for w in workers:
        w.start()
    try:
        for _ in range(3):
            before = ok_count()
            wait_until(lambda: ok_count() > before + 20, what="successful requests")
            redis_server.restart()
        before = ok_count()
        wait_until(lambda: ok_count() > before + 20, what="successful requests after last restart")
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=60)
        closes = sp.stats()[label]["closed"] - closed_before if REAL_POOL else 0
        httpd.shutdown()
        httpd.server_close()
        ext.close(app)
    assert not any(w.is_alive() for w in workers)
    assert set(statuses) <= {200, 503}, statuses
    if REAL_POOL:
        assert client_peak[0] <= 4
        # the server may briefly still count connections the client has just closed
        assert peak[0] <= 4 + closes, (peak[0], closes)


@pytest.mark.skipif(not REAL_POOL, reason="the example uses SafeConnectionPool")
def test_example_app_runs_with_one_command():
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    out = subprocess.run([sys.executable, os.path.join(root, "examples", "flask_app.py"), "--smoke"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "/ 200" in out.stdout and "/safepool/explain 200" in out.stdout


@pytest.mark.parametrize("given", ["CACHE_REDIS_URL", "CACHE_REDIS_HOST"])
def test_flask_caching_backend_builds_a_safe_pool_from_the_cache_config(redis_server, given):
    """The app gives only Flask-Caching's own settings: the cache is on a SafeConnectionPool
    with the budget of its CACHE_OPTIONS, and 8 threads never hold more than it."""
    flask_caching = pytest.importorskip("flask_caching")
    app = flask.Flask("safepool-cache-test")
    config = {"CACHE_REDIS_URL": redis_server.url} if given == "CACHE_REDIS_URL" else {
        "CACHE_REDIS_HOST": "127.0.0.1", "CACHE_REDIS_PORT": redis_server.port}
    app.config.update(CACHE_TYPE="redis_safepool.flask_caching.RedisCache",
                      CACHE_KEY_PREFIX="app:", CACHE_DEFAULT_TIMEOUT=60,
                      CACHE_OPTIONS={"max_connections": 2, "timeout": 10,
                                     "client_name": "safepool-cache"}, **config)
    cache = flask_caching.Cache(app)
    pool = cache.cache._write_client.connection_pool
    assert isinstance(pool, sp.SafeConnectionPool) and pool.max_connections == 2
    calls, peak, errors = [], [0], []

    @app.route("/cached/<int:n>")
    @cache.cached()
    def cached(n):
        calls.append(n)
        return {"n": n}

    def client_thread(t):
        try:
            c = app.test_client()
            for i in range(20):
                assert c.get(f"/cached/{(t + i) % 5}").json == {"n": (t + i) % 5}
                listing = redis_server.command("CLIENT", "LIST").decode()
                peak[0] = max(peak[0], listing.count("name=safepool-cache "))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client_thread, args=(t,), daemon=True) for t in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert sorted(set(calls)) == [0, 1, 2, 3, 4] and len(calls) <= 5 * 8
        assert redis_server.command("KEYS", "app:*").count(b"app:") >= 5
        assert 1 <= peak[0] <= 2 and pool.stats()["total"] <= 2
    finally:
        pool.close()
