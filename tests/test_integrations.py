"""Job queues, caches and rate limiters on the safe pool, each with its own worker, against a real
redis-server: the pool bounds their connections and they carry on after a server restart."""

import asyncio
import operator
import signal
import threading

import pytest
import redis
import rq
from process_clients import PeakClients

import redis_safepool as sp

BUDGET = 4
NAME = "safepool-integration"
JOBS = 20


def test_rq_forking_worker(server_url, make_pool):
    pool = make_pool(server_url, max_connections=4, timeout=5)
    connection = redis.Redis(connection_pool=pool)
    queue = rq.Queue(connection=connection)
    jobs = [queue.enqueue(operator.add, i, i) for i in range(20)]
    worker = rq.Worker([queue], connection=connection)  # forks a work horse per job
    assert worker.work(burst=True)
    assert [job.return_value() for job in jobs] == [2 * i for i in range(20)]
    assert worker.connection.connection_pool is pool
    assert pool.stats()["in_use"] == 0 and pool.stats()["total"] <= 4


@pytest.fixture
def peak(redis_server):
    watch = PeakClients(redis_server, NAME)
    yield watch
    watch.close()


def _pool(make_pool, redis_server, **kw):
    return make_pool(redis_server.url, max_connections=BUDGET, timeout=10, client_name=NAME,
                     socket_timeout=5, socket_connect_timeout=2, **kw)


def _wait_ready(pool, wait_until):
    wait_until(lambda: pool.stats()["state"] == "ready", timeout=20, what="the endpoint ready")


def _restart(redis_server, pool, wait_until):
    """Restart the server and wait until the pool's health checker has seen it back (until
    then the pool fails fast with ServerUnavailableError, by design)."""
    redis_server.restart()
    _wait_ready(pool, wait_until)


def _retry(fn, wait_until, what):
    """``fn()`` until it stops raising a connection error (the first call after a restart
    may hit a connection the server dropped)."""
    def attempt():
        try:
            return (fn(),)
        except redis.exceptions.ConnectionError:
            return None
    return wait_until(attempt, timeout=20, what=what)[0]


def test_dramatiq_worker_bounded_and_survives_restart(redis_server, make_pool, peak, wait_until):
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    pool = _pool(make_pool, redis_server)
    client = redis.Redis(connection_pool=pool)
    broker = RedisBroker(client=client)
    assert broker.client.connection_pool is pool

    @dramatiq.actor(broker=broker, max_retries=3, min_backoff=10, max_backoff=100)
    def store(i):
        client.set(f"dramatiq:{i}", i * 2)

    worker = dramatiq.Worker(broker, worker_threads=8, worker_timeout=100)
    worker.start()
    try:
        for batch in (range(JOBS), range(JOBS, 2 * JOBS)):
            for i in batch:
                _retry(lambda: store.send(i), wait_until, "the message to be sent")
            wait_until(lambda: all(client.exists(f"dramatiq:{i}") for i in batch),
                       timeout=30, what="the batch's results")
            if batch.start == 0:
                redis_server.restart()
    finally:
        worker.stop(timeout=5000)
    assert peak.close() <= BUDGET
    assert pool.stats()["total"] <= BUDGET


def test_huey_consumer_bounded_and_survives_restart(redis_server, make_pool, peak, wait_until):
    from huey import RedisHuey

    pool = _pool(make_pool, redis_server)
    huey = RedisHuey("safepool", connection_pool=pool, read_timeout=0.2)
    assert huey.storage.pool is pool

    @huey.task()
    def double(i):
        return 2 * i

    consumer = huey.create_consumer(workers=8, worker_type="thread", periodic=False,
                                    initial_delay=0.01, max_delay=0.1)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    consumer.start()  # its worker threads; it sets signal handlers, put back below
    try:
        for batch in (range(JOBS), range(JOBS, 2 * JOBS)):
            results = [_retry(lambda: double(i), wait_until, "the task to be enqueued")
                       for i in batch]
            assert [_retry(lambda: r.get(blocking=True, timeout=20), wait_until, "a result")
                    for r in results] == [2 * i for i in batch]
            if batch.start == 0:
                redis_server.restart()
    finally:
        consumer.stop(graceful=True)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert peak.close() <= BUDGET
    assert pool.stats()["total"] <= BUDGET


def test_limits_bounded_and_survives_restart(redis_server, make_pool, peak, wait_until):
    from limits import RateLimitItemPerMinute
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter

    pool = _pool(make_pool, redis_server)
    storage = RedisStorage(redis_server.url, connection_pool=pool)
    limiter = MovingWindowRateLimiter(storage)
    item = RateLimitItemPerMinute(1000)
    errors, allowed, failures = [], [], []

    def hit(n):
        for _ in range(BUDGET + 10):
            try:
                return limiter.hit(item, "user", str(n % 3))
            except sp.ServerUnavailableError:  # paused until the checker sees the server back
                _wait_ready(pool, wait_until)
            except redis.exceptions.ConnectionError as exc:
                failures.append(exc)  # a connection the restarted server dropped fails once
        raise AssertionError(f"hit failed {BUDGET + 10} times")

    def worker(n):
        try:
            allowed.append(sum(hit(n) for _ in range(25)))
        except Exception as exc:
            errors.append(exc)

    for round_ in range(2):
        threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and len(allowed) == 16 * (round_ + 1)
        if round_ == 0:
            _restart(redis_server, pool, wait_until)  # the counters go; the script is loaded again
    assert len(failures) <= BUDGET, failures
    assert sum(allowed) == 2 * 16 * 25
    assert peak.close() <= BUDGET
    assert pool.stats()["total"] <= BUDGET


def test_aiocache_bounded_and_survives_restart(redis_server, peak, wait_until):
    from aiocache import RedisCache

    from redis_safepool.asyncio import SafeConnectionPool

    failures = []

    async def attempt(op, *args):
        for _ in range(BUDGET + 10):
            try:
                return await op(*args)
            except sp.ServerUnavailableError:  # paused until the checker sees the server back
                _wait_ready(cache.client.connection_pool, wait_until)
            except redis.exceptions.ConnectionError as exc:
                failures.append(exc)  # a connection the restarted server dropped fails once
        raise AssertionError(f"{op.__name__}{args} failed {BUDGET + 10} times")

    cache = None

    async def main():
        nonlocal cache
        cache = RedisCache(endpoint="127.0.0.1", port=redis_server.port, pool_max_size=BUDGET,
                           connection_pool_class=SafeConnectionPool,
                           connection_pool_kwargs={"client_name": NAME, "timeout": 10})
        pool = cache.client.connection_pool
        assert isinstance(pool, SafeConnectionPool)
        try:
            for round_ in range(2):
                if round_ == 1:
                    _restart(redis_server, pool, wait_until)
                await asyncio.gather(*(attempt(cache.set, f"k{i}", i) for i in range(200)))
                got = await asyncio.gather(*(attempt(cache.get, f"k{i}") for i in range(200)))
                assert got == list(range(200))
            assert pool.stats()["total"] <= BUDGET
        finally:
            await cache.close()
            await pool.disconnect()

    asyncio.run(main())
    assert len(failures) <= BUDGET, failures
    assert peak.close() <= BUDGET


def test_flask_limiter_on_the_pool_counts_exactly_within_budget(redis_server, make_pool, peak):
    import flask
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    pool = _pool(make_pool, redis_server)
    app = flask.Flask("safepool-limiter")
    limiter = Limiter(get_remote_address, app=app, storage_uri=redis_server.url,
                      storage_options={"connection_pool": pool}, strategy="moving-window")

    @app.route("/limited")
    @limiter.limit("25 per minute")
    def limited():
        return "ok"

    statuses, errors = [], []

    def client_thread():
        try:
            c = app.test_client()
            statuses.extend(c.get("/limited").status_code for _ in range(10))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client_thread, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(statuses) == [200] * 25 + [429] * (8 * 10 - 25)
    assert limiter.storage.storage.connection_pool is pool
    assert 1 <= peak.close() <= BUDGET
    assert pool.stats()["total"] <= BUDGET


def test_uvicorn_serves_on_the_asyncio_pool_within_budget(redis_server, peak, wait_until):
    import os
    import subprocess
    import sys
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    from redis_safepool.testing import free_port

    port = free_port()
    env = dict(os.environ, APP_REDIS_URL=redis_server.url, APP_BUDGET=str(BUDGET),
               APP_CLIENT_NAME=NAME)
    app_dir = os.path.join(os.path.dirname(__file__), "asgi_app")
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", app_dir, "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def get(_=None):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as resp:
            return resp.status, int(resp.read())

    def up():
        try:
            return get()
        except OSError:
            return None

    try:
        wait_until(up, timeout=30, what="uvicorn to serve")
        with ThreadPoolExecutor(16) as ex:  # 16 requests at once, each holding a connection 0.1s
            got = list(ex.map(get, range(48)))
        assert {status for status, _ in got} == {200}
        assert sorted(hits for _, hits in got) == list(range(2, 50))
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=20)
    assert 1 <= peak.close() <= BUDGET, stderr.decode(errors="replace")[-2000:]
