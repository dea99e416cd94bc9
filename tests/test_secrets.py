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
from redis_safepool import observe, report
from redis_safepool.asyncio import SafeConnectionPool as AsyncPool

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostile import EchoListener  # noqa: E402

PASSWORD = "Sup3r-Secret-Pw"
FAST = dict(interval=0.05, recover_interval=0.05, backoff_min=0.02, backoff_max=0.05)
MODES = [None, "ERR", "LOADING"]  # raw echo; an old server's "unknown command"; an error the core acts on
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
