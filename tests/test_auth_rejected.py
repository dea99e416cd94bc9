"""A server that rejects the pool's credentials: callers fail fast, connects stay at the probe rate."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import List

import pytest
import redis
import redis.asyncio as ra

import redis_safepool as sp
import redis_safepool.asyncio as spa
from redis_safepool.testing import RedisServer

OLD = "old-secret-pw-1"
NEW = "new-secret-pw-2"
THREADS = 16
LOOP_BOUND = 200_000



class Load:
    """Threads doing GET in a bounded loop; every error is kept with when it happened."""

    def __init__(self, pool, start_thread) -> None:
        self.pool = pool
        self.client = redis.Redis(connection_pool=pool)
        self.stop = threading.Event()
        self.ok = 0
        self.errors: List[tuple] = []
        self.lock = threading.Lock()
        self.threads = [start_thread(self._run) for _ in range(THREADS)]

    def _run(self) -> None:
        for _ in range(LOOP_BOUND):
            if self.stop.is_set():
                return
            try:
                self.client.get("k")
                with self.lock:
                    self.ok += 1
            except redis.exceptions.RedisError as exc:
                with self.lock:
                    self.errors.append((time.monotonic(), exc))
                time.sleep(0.001)   # a caller's own retry pause, not synchronisation

    def auth_errors(self) -> int:
        with self.lock:
            return sum(isinstance(e, redis.exceptions.AuthenticationError) for _, e in self.errors)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads)


def connections_received(admin: redis.Redis) -> int:
    return int(admin.info("stats")["total_connections_received"])


@pytest.mark.parametrize("callers", ["threads", "asyncio tasks"])
def test_restart_with_new_password(callers, redis_server_factory, make_pool, wait_until,
                                   start_thread):
    server = redis_server_factory()
    server.command("CONFIG", "SET", "requirepass", OLD)
    url = f"redis://:{OLD}@{server.host}:{server.port}/0"
    if callers == "threads":
        load = Load(make_pool(url, max_connections=8, timeout=2), start_thread)
    else:
        load = AsyncLoad(url, start_thread)
    restarted = RedisServer(port=server.port)
    admin = None
    try:
        wait_until(lambda: load.ok > 100, what="traffic before the restart")
        server.kill()
        restarted.start()
        restarted.command("CONFIG", "SET", "requirepass", NEW)
        # one connection of its own for every look at the counter
        admin = redis.Redis(host=server.host, port=server.port, password=NEW,
                            connection_pool=None, single_connection_client=True)
        base = connections_received(admin)
        began = time.monotonic()
        wait_until(lambda: load.auth_errors() >= 500, timeout=30,
                   what="callers failing with the credentials error")
        # a measurement window of two seconds of rejected credentials under load
        wait_until(lambda: time.monotonic() >= began + 2.0, what="the window")
        made = connections_received(admin) - base
        elapsed = time.monotonic() - began
        # the pool's own connections that passed before the first rejection (at most
        # its budget), the checker's probes (a few while recovering, then one per
        # interval) and one trial connect per backoff period (0.3 s, doubling to 1 s)
        bound = 8 + 4 + 2 * (elapsed + 1) / 0.3
        print(f"server accepted {made} connections in {elapsed:.2f}s of rejected credentials")
        assert made <= bound, (made, elapsed)
        with load.lock:
            first = min(t for t, e in load.errors
                        if isinstance(e, redis.exceptions.AuthenticationError))
            later = [e for t, e in load.errors if t > first]
        assert later
        for exc in later:
            assert isinstance(exc, redis.exceptions.AuthenticationError), repr(exc)
            assert isinstance(exc, redis.exceptions.ConnectionError), repr(exc)
            assert OLD not in str(exc) and NEW not in str(exc)
        assert any(isinstance(e, sp.CredentialsRejectedError) for e in later)
        stats = load.pool.stats()
        assert OLD not in repr(stats) and NEW not in repr(stats)

        # the password is right again: traffic resumes
        admin.config_set("requirepass", OLD)
        ok = load.ok
        wait_until(lambda: load.ok > ok + 100, what="traffic after the password is right again")
    finally:
        load.finish()
        if admin is not None:
            admin.close()
        restarted.stop()


def test_new_pool_with_right_password(redis_server_factory, make_pool, wait_until):
    """Rejected credentials are a condition of their flavor: a pool with the right
    password on the same endpoint is not failed for them."""
    server = redis_server_factory()
    server.command("CONFIG", "SET", "requirepass", NEW)
    wrong = make_pool(f"redis://:{OLD}@{server.host}:{server.port}/0", max_connections=4)
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(connection_pool=wrong).get("k")
    with pytest.raises(sp.CredentialsRejectedError) as info:
        redis.Redis(connection_pool=wrong).get("k")
    assert isinstance(info.value, redis.exceptions.ConnectionError)
    assert OLD not in str(info.value) and NEW not in str(info.value)
    right = make_pool(f"redis://:{NEW}@{server.host}:{server.port}/0", max_connections=4)
    assert redis.Redis(connection_pool=right).set("k", "v") is True


class AsyncLoad:
    """Tasks on one event loop (in its own thread) doing GET in a bounded loop; errors kept with when."""

    def __init__(self, url: str, start_thread) -> None:
        self.url = url
        self.pool = None
        self.stop = threading.Event()
        self.ok = 0
        self.errors: List[tuple] = []
        self.lock = threading.Lock()
        self.thread = start_thread(lambda: asyncio.run(self._main()))

    async def _main(self) -> None:
        self.pool = spa.SafeConnectionPool.from_url(self.url, max_connections=8, timeout=2)
        client = ra.Redis(connection_pool=self.pool)
        try:
            await asyncio.gather(*(self._run(client) for _ in range(THREADS)))
        finally:
            await self.pool.disconnect()

    async def _run(self, client) -> None:
        for _ in range(LOOP_BOUND):
            if self.stop.is_set():
                return
            try:
                await client.get("k")
                with self.lock:
                    self.ok += 1
            except redis.exceptions.RedisError as exc:
                with self.lock:
                    self.errors.append((time.monotonic(), exc))
                await asyncio.sleep(0.001)   # a caller's own retry pause, not synchronisation

    def auth_errors(self) -> int:
        with self.lock:
            return sum(isinstance(e, redis.exceptions.AuthenticationError) for _, e in self.errors)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
