"""The password never leaves: not in errors, stats, explain(), logs, warnings, metrics, 503 bodies or tables."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import warnings

import pytest
import redis
import redis.asyncio as aredis

import redis_safepool as sp
from redis_safepool import _census, _endpoint_keys, _tables, observe, report
from redis_safepool.asyncio import SafeConnectionPool as AsyncPool

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostile import EchoListener  # noqa: E402

PASSWORD = "Sup3r-Secret-Pw"
FAST = dict(interval=0.05, recover_interval=0.05, backoff_min=0.02, backoff_max=0.05)
MODES = [None, "ERR", "LOADING", "WRONGPASS"]  # raw echo; an old server's "unknown command"; errors the core acts on
ATTEMPTS = 20


@pytest.fixture(autouse=True)
def checker_fast():
    saved = sp.checker_config()
    sp.checker_config(**FAST)
    yield
    sp.checker_config(**saved)


def _texts_of(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield str(exc)
        yield repr(exc)
        yield repr(exc.args)
        exc = exc.__cause__ or exc.__context__


def _everything_shown(pool, errors, caplog, caught):
    texts = [repr(pool), str(pool.stats()), str(sp.stats()), report.format_table(),
             sp.observe.explain(pool), sp.observe.explain(), str(observe.last_failures()),
             caplog.text, " ".join(str(w.message) for w in caught)]
    for exc in errors:
        texts.extend(_texts_of(exc))
    try:
        from redis_safepool import prometheus

        texts.append(prometheus.exposition().decode())
    except ImportError:  # pragma: no cover - prometheus_client is a test dependency
        pass
    return texts


def _assert_no_password(texts):
    for text in texts:
        assert PASSWORD not in text, text
        assert PASSWORD[:8] not in text, text


def _probed(pool):
    """The checker has probed the listener at least once since the pool saw it fail."""
    st = pool.stats()
    return st["probes"] >= 2 and st["last_error"]


@pytest.mark.parametrize("code", MODES)
def test_echoed_password_stays_secret_sync(code, caplog, wait_until):
    caplog.set_level(logging.DEBUG)
    with EchoListener(code) as listener, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool = sp.SafeConnectionPool.from_url(listener.url(PASSWORD), max_connections=4, timeout=0.2)
        r = redis.Redis(connection_pool=pool, socket_timeout=0.5)
        errors = []
        try:
            for _ in range(ATTEMPTS):
                try:
                    r.ping()
                except (redis.RedisError, OSError) as exc:
                    errors.append(exc)
            wait_until(lambda: _probed(pool), what="a probe of the hostile listener")
            for _ in range(3):
                try:
                    r.ping()
                except (redis.RedisError, OSError) as exc:
                    errors.append(exc)
            if code is not None:  # a raw echo fools redis-py's PING: only the probe sees it
                assert errors
            if code == "LOADING":  # the pool paused: its fail-fast message quotes the last error
                assert any(isinstance(e, sp.ServerUnavailableError) for e in errors)
            _assert_no_password(_everything_shown(pool, errors, caplog, caught))
        finally:
            pool.close()


@pytest.mark.parametrize("code", MODES)
def test_echoed_password_stays_secret_asyncio(code, caplog, wait_until):
    caplog.set_level(logging.DEBUG)

    async def attempts(r, errors, n):
        for _ in range(n):
            try:
                await r.ping()
            except Exception as exc:  # a raw echo confuses redis-py's own parser too
                errors.append(exc)

    with EchoListener(code) as listener, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool = AsyncPool.from_url(listener.url(PASSWORD), max_connections=4, timeout=0.2)
        errors = []

        async def main():
            r = aredis.Redis(connection_pool=pool, socket_timeout=0.5)
            await attempts(r, errors, ATTEMPTS)
            for _ in range(200):  # bounded: until a probe ran
                if _probed(pool):
                    break
                await asyncio.sleep(0.01)
            await attempts(r, errors, 3)
            await pool.aclose()

        asyncio.run(main())
        if code is not None:
            assert errors
        _assert_no_password(_everything_shown(pool, errors, caplog, caught))


def test_flask_503_body_and_log_keep_the_password(caplog, wait_until):
    flask = pytest.importorskip("flask")
    from redis_safepool.flask import SafePool

    caplog.set_level(logging.DEBUG)
    with EchoListener("LOADING") as listener:
        app = flask.Flask("safepool-secrets")
        app.config.update(REDIS_URL=listener.url(PASSWORD), REDIS_MAX_CONNECTIONS=2,
                          REDIS_POOL_TIMEOUT=0.2)
        ext = SafePool(app)

        @app.route("/hit")
        def hit():
            return {"hits": ext.client.incr("hits")}

        try:
            client = app.test_client()
            bodies = []
            for _ in range(ATTEMPTS):
                resp = client.get("/hit")
                assert resp.status_code == 503
                bodies.append(resp.get_data(as_text=True))
            wait_until(lambda: _probed(ext.get_client(app).connection_pool), what="a probe")
            resp = client.get("/hit")
            bodies.append(resp.get_data(as_text=True))
            assert resp.status_code == 503 and "ServerUnavailableError" in bodies[-1]
            _assert_no_password(bodies + [caplog.text])
        finally:
            ext.close(app)


def test_error_body_masks_the_secrets_it_is_given():
    from redis_safepool._http import error_body

    exc = redis.ConnectionError(f"the server said: AUTH {PASSWORD}")
    body = error_body(exc, [PASSWORD])
    assert PASSWORD not in str(body) and "***" in body["detail"]


# ------------------------------------------------------------------ URL errors


@pytest.mark.parametrize("url", [
    f"redis://:{PASSWORD}@127.0.0.1:99999/0",
    f"redis://:{PASSWORD}@127.0.0.1:notaport/0",
    f"redis://alice:{PASSWORD}@127.0.0.1:6379/notadb",
    f"redis://alice:{PASSWORD}@127.0.0.1:0/0",
    f"rediss://:{PASSWORD}@127.0.0.1:-1/0",
])
@pytest.mark.parametrize("build", [
    sp.SafeConnectionPool.from_url,
    AsyncPool.from_url,
    lambda url: sp.configure(url, max_connections=2),
], ids=["sync", "asyncio", "configure"])
def test_url_errors_redact_the_password(url, build):
    with pytest.raises(ValueError) as info:
        build(url)
    text = str(info.value)
    assert PASSWORD not in text and PASSWORD not in repr(info.value.args), text
    assert "127.0.0.1" in text or "port" in text, text


def test_redact_url_masks_userinfo_and_query():
    from redis_safepool._redact import redact_url

    assert redact_url("redis://u:p:w@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("redis://h:1/0?password=xyz&db=1") == "redis://h:1/0?password=***&db=1"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"
    assert redact_url("unix://:pw@/tmp/s.sock") == "unix://:***@/tmp/s.sock"


# ---------------------------------------------------------------- flavor table


def _table_bytes():
    rows = []
    for key, value in _endpoint_keys._flavors.items():
        rows.append(bytes(key))
        rows.append(repr(value).encode())
    return b"".join(rows)


@pytest.mark.filterwarnings("ignore::redis_safepool.observe.PoolPerRequestWarning")
def test_flavor_table_keeps_no_password_and_forgets_closed_pools():
    gc.collect()  # earlier tests' pools in reference cycles: not while the 50 below are counted
    before = _endpoint_keys.flavor_count()
    pools = [sp.SafeConnectionPool(host="127.0.0.1", port=6398, password=f"{PASSWORD}-{i}",
                                   max_connections=2) for i in range(50)]
    try:
        assert _endpoint_keys.flavor_count() >= before + 50
        table = _table_bytes()
        assert PASSWORD.encode() not in table and PASSWORD[:8].encode() not in table
        assert all(isinstance(k, bytes) and len(k) == 16 for k in _endpoint_keys._flavors)
    finally:
        for pool in pools:
            pool.close()
    del pools, pool
    gc.collect()
    assert _endpoint_keys.flavor_count() <= before


def test_equal_settings_share_a_flavor_different_passwords_do_not():
    a = sp.SafeConnectionPool(host="127.0.0.1", port=6398, password="one", max_connections=2)
    b = sp.SafeConnectionPool(host="127.0.0.1", port=6398, password="one", max_connections=2)
    c = sp.SafeConnectionPool(host="127.0.0.1", port=6398, password="two", max_connections=2)
    try:
        assert a._flavor_ref.id == b._flavor_ref.id != c._flavor_ref.id
    finally:
        for pool in (a, b, c):
            pool.close()


def _asyncio_cycles(pool, cycles, expected):
    async def once():
        try:
            conn = await pool.get_connection()
        except expected:
            return
        await pool.release(conn)

    before = _endpoint_keys.flavor_count()
    sizes = set()
    for i in range(cycles):
        asyncio.run(once())
        if i % 100 == 0:
            sizes.add(_endpoint_keys.flavor_count())
    assert max(sizes) <= before + 2, sizes
    assert PASSWORD.encode() not in _table_bytes()


@pytest.mark.slow  # 5,000 event loops: about 15 s on the normal build
def test_many_asyncio_runs_leave_the_flavor_table_bounded(wait_until):
    # A refused endpoint pauses: each run's checkout fails fast, after its
    # loop got a flavor, so 5,000 loops cost no connection each.
    from redis_safepool.testing import free_port

    pool = AsyncPool.from_url(f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0",
                              max_connections=2, timeout=2)
    try:
        _asyncio_cycles(pool, 5000, redis.ConnectionError)
        assert pool.stats()["state"] == "paused"
    finally:
        asyncio.run(pool.aclose())


def test_asyncio_runs_with_a_server_leave_table_and_budget_bounded(redis_server):
    redis_server.command("CONFIG", "SET", "requirepass", PASSWORD)
    pool = AsyncPool.from_url(redis_server.url.replace("redis://", f"redis://:{PASSWORD}@"),
                              max_connections=2, timeout=2)
    try:
        _asyncio_cycles(pool, 300, ())
        assert pool.stats()["total"] <= 2
    finally:
        asyncio.run(pool.aclose())


def test_observe_tables_stay_bounded_with_endless_endpoints():
    observe.reset()
    try:
        for port in range(20000, 20000 + _tables.MAX_ENDPOINTS + 100):
            pool = sp.SafeConnectionPool(host="127.0.0.1", port=port, max_connections=1)
            observe.note_acquire_failed(pool, sp.PoolTimeoutError("timed out"))
            pool.close()
        assert len(observe.pools_created()) <= _tables.MAX_ENDPOINTS
        assert len(observe.last_failures()) <= _tables.MAX_ENDPOINTS
        assert len(_census._pool_sites) <= _tables.MAX_ENDPOINTS
    finally:
        observe.reset()


# -- a reconnect inside a command, where redis-py raises on its own --------------------------

CREDENTIALS = ["url", "credential_provider"]


def _pool_kwargs(how: str, port: int, retry):
    # retry_on_error: redis-py before 6 retries nothing unless told what
    retrying = dict(retry=retry, retry_on_error=[redis.exceptions.ConnectionError])
    if how == "url":
        return dict(url=f"redis://default:{PASSWORD}@127.0.0.1:{port}/0", **retrying)
    from redis.credentials import UsernamePasswordCredentialProvider

    return dict(url=f"redis://127.0.0.1:{port}/0", **retrying,
                credential_provider=UsernamePasswordCredentialProvider("default", PASSWORD))


def _blocked_then_echoed(server, start_thread, wait_until, command):
    """Run ``command`` (a BLPOP) in a thread; once it blocks, the server dies and an
    echoing listener takes its port: redis-py's retry reconnects inside the command and
    the listener quotes the AUTH back. Returns what the command raised."""
    raised = []

    def run() -> None:
        try:
            command()
        except Exception as exc:  # noqa: BLE001 - judged by the test
            raised.append(exc)

    thread = start_thread(run)
    wait_until(lambda: server.info("clients")["blocked_clients"] == "1", what="BLPOP to block")
    server.kill()
    with EchoListener("ERR", port=server.port):
        thread.join(60)
    assert not thread.is_alive(), "the command hung"
    assert len(raised) == 1, raised
    return raised[0]


@pytest.mark.parametrize("how", CREDENTIALS)
def test_password_echoed_to_a_reconnect_inside_a_command_stays_secret(
        how, redis_server, start_thread, wait_until):
    from redis.backoff import ConstantBackoff
    from redis.retry import Retry

    # refused until the listener is up, then its echo (not retried) is raised
    kw = _pool_kwargs(how, redis_server.port, Retry(ConstantBackoff(0.02), 500))
    pool = sp.SafeConnectionPool.from_url(kw.pop("url"), max_connections=2, **kw)
    r = redis.Redis(connection_pool=pool)
    try:
        assert r.ping() is True
        exc = _blocked_then_echoed(redis_server, start_thread, wait_until,
                                   lambda: r.blpop(["nothing"], timeout=0))
        texts = list(_texts_of(exc))
        assert any("AUTH" in t for t in texts), texts  # the listener's echo came back
        _assert_no_password(texts)
    finally:
        pool.close()


@pytest.mark.parametrize("how", CREDENTIALS)
def test_password_echoed_to_a_reconnect_inside_an_asyncio_command_stays_secret(
        how, redis_server, start_thread, wait_until):
    from redis.asyncio.retry import Retry
    from redis.backoff import ConstantBackoff

    kw = _pool_kwargs(how, redis_server.port, Retry(ConstantBackoff(0.02), 500))
    pool = AsyncPool.from_url(kw.pop("url"), max_connections=2, **kw)

    async def blpop():
        r = aredis.Redis(connection_pool=pool)
        try:
            assert await r.ping() is True
            await r.blpop(["nothing"], timeout=0)
        finally:
            await pool.aclose()

    exc = _blocked_then_echoed(redis_server, start_thread, wait_until,
                               lambda: asyncio.run(blpop()))
    texts = list(_texts_of(exc))
    assert any("AUTH" in t for t in texts), texts
    _assert_no_password(texts)
