"""A server that is up and listening never makes callers fail: our own closes, CLIENT KILL, under load."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import List

import pytest
import redis

import redis_safepool as sp

LOOP_BOUND = 200_000   # every worker loop stops after this many iterations, whatever happens



class Busy:
    """Threads running GET in a bounded loop; every exception is counted by type, never raised."""

    def __init__(self, pool, threads: int, start_thread) -> None:
        self.client = redis.Redis(connection_pool=pool)
        self.client.set("k", "v")
        self.stop = threading.Event()
        self.ok = 0
        self.errors: Counter = Counter()
        self.samples: List[str] = []
        self.threads = [start_thread(self._run) for _ in range(threads)]

    def _run(self) -> None:
        for _ in range(LOOP_BOUND):
            if self.stop.is_set():
                return
            try:
                self.client.get("k")
                self.ok += 1
            except redis.exceptions.RedisError as exc:
                self.errors[type(exc).__name__] += 1
                if len(self.samples) < 5:
                    self.samples.append(str(exc))

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "a worker hung"


def until_ops(busy: Busy, more: int, wait_until) -> None:
    """Lets the workers complete `more` commands (so each disturbance meets real traffic)."""
    base = busy.ok
    wait_until(lambda: busy.ok >= base + more, timeout=30, what=f"{more} more commands")


@pytest.mark.parametrize("threads", [16, 64])
def test_disconnect_under_traffic_fails_nobody(redis_server, make_pool, wait_until, start_thread,
                                               threads):
    """pool.disconnect() (in-use connections too) closes sockets with commands in flight: the
    replies that arrive after our shutdown() make the kernel reset them. Those resets are ours,
    not the server's: nobody may get ServerUnavailableError, and the endpoint stays ready."""
    pool = make_pool(redis_server.url, max_connections=8, timeout=10)
    busy = Busy(pool, threads, start_thread)
    transitions = pool.stats()["transitions"]
    try:
        for _ in range(40):
            until_ops(busy, 20, wait_until)
            pool.disconnect()
        until_ops(busy, 20, wait_until)
    finally:
        busy.join()
    assert busy.errors["ServerUnavailableError"] == 0, (busy.errors, busy.samples)
    stats = pool.stats()
    assert stats["transitions"] == transitions, stats["state_reason"]
    assert stats["state"] == "ready", stats


@pytest.mark.parametrize("threads", [16, 64])
def test_client_kill_under_traffic_fails_nobody(redis_server, make_pool, wait_until, start_thread,
                                                threads):
    """CLIENT KILL TYPE normal from another client closes every one of our sockets at once, as a
    dying server would; but the server still accepts and answers, so nobody fails because of
    the pool (redis-py's own retry reconnects the commands that were in flight)."""
    pool = make_pool(redis_server.url, max_connections=8, timeout=10)
    busy = Busy(pool, threads, start_thread)
    kills = 0
    try:
        for _ in range(20):
            until_ops(busy, 50, wait_until)
            reply = redis_server.command("CLIENT", "KILL", "TYPE", "normal")
            kills += int(reply[1:]) if reply.startswith(b":") else 0
        until_ops(busy, 50, wait_until)
    finally:
        busy.join()
    assert kills > 0
    assert busy.errors["ServerUnavailableError"] == 0, (busy.errors, busy.samples)
    assert pool.stats()["state"] == "ready", pool.stats()


def test_refused_caller_is_told_the_state_that_refused_it(redis_server, make_pool, wait_until):
    """A caller refused by a pause is told "paused" and why, even when a probe has let
    traffic back in before its thread builds the message."""
    sp.checker_config(interval=0.2, recover_interval=0.05, backoff_min=0.02, backoff_max=0.1)
    pool = make_pool(redis_server.url, max_connections=2, timeout=5)
    client = redis.Redis(connection_pool=pool)
    assert client.ping() is True
    redis_server.kill()
    wait_until(lambda: pool.stats()["state"] == "paused", what="the pause")
    with pytest.raises(sp.ServerUnavailableError) as paused:
        pool.get_connection()
    assert " is paused since " in str(paused.value) and "server down" in str(paused.value)
    redis_server.start()
    wait_until(lambda: pool.stats()["state"] == "ready", timeout=20, what="recovery")
    # the message of a refusal built after the recovery (as a woken waiter's is)
    with pytest.raises(sp.ServerUnavailableError) as late:
        pool._raise_unavailable()
    text = str(late.value)
    assert " was paused since " in text and "server down" in text, text
    assert text.endswith("(now ready)"), text
    assert "recovered; failing fast" not in text
