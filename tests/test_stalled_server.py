"""A server that accepts and never answers (SIGSTOP) is found out even with every slot in use."""

from __future__ import annotations

import signal
import threading
from collections import Counter

import pytest
import redis

import redis_safepool as sp
from redis_safepool.report import explain

LOOP_BOUND = 100_000   # every worker loop stops after this many iterations, whatever happens


@pytest.fixture(params=["tcp", "tls"])
def target(request):
    """(server, url, connection kwargs): a plain server, or a TLS one (whose probe is a
    connect, which a stopped server's kernel still accepts, until it is suspected)."""
    if request.param == "tcp":
        server = request.getfixturevalue("redis_server")
        return server, server.url, {}
    server, url = request.getfixturevalue("tls_server")
    return server, url, {"ssl_cert_reqs": None}



def test_stopped_server_with_budget_saturated_fails_fast(target, make_pool, wait_until,
                                                        start_thread):
    """Twice as many threads as slots, long socket and pool timeouts: when the server stops
    answering, no spare slot is left for an ordinary probe. The checker sees that nothing
    comes back, probes anyway, and pauses; callers then fail fast with the real cause, and
    traffic comes back when the server does."""
    sp.checker_config(interval=0.2, recover_interval=0.05, backoff_min=0.02, backoff_max=0.1,
                      probe_timeout=0.3)
    redis_server, url, kwargs = target
    pool = make_pool(url, max_connections=4, timeout=60, socket_timeout=60, **kwargs)
    client = redis.Redis(connection_pool=pool)
    client.set("k", "v")
    stop = threading.Event()
    outcomes: Counter = Counter()

    def worker() -> None:
        for _ in range(LOOP_BOUND):
            if stop.is_set():
                return
            try:
                client.get("k")
                outcomes["ok"] += 1
            except redis.exceptions.RedisError as exc:
                outcomes[type(exc).__name__] += 1
                stop.wait(0.01)  # pacing only: a failing client does not spin

    threads = [start_thread(worker) for _ in range(8)]
    stopped = False
    try:
        wait_until(lambda: outcomes["ok"] >= 200, timeout=30, what="traffic")
        redis_server.proc.send_signal(signal.SIGSTOP)
        stopped = True
        wait_until(lambda: pool.stats()["state"] == "paused", timeout=20,
                   what="the silent server to be found out")
        stats = pool.stats()
        assert "not answering" in stats["state_reason"], stats
        assert stats["waiters"] == 0, stats  # the queue failed at once
        with pytest.raises(sp.ServerUnavailableError) as info:
            pool.get_connection()
        assert "not answering" in str(info.value)
        text = explain(pool)
        assert "not answering" in text and "raise max_connections" not in text, text
        # a probe without a reply keeps it paused
        probes = pool.stats()["probes"]
        wait_until(lambda: pool.stats()["probes"] >= probes + 2, timeout=20, what="more probes")
        assert pool.stats()["state"] == "paused", pool.stats()
        assert outcomes["PoolTimeoutError"] == 0, outcomes
        redis_server.proc.send_signal(signal.SIGCONT)
        stopped = False
        wait_until(lambda: pool.stats()["state"] == "ready", timeout=20, what="recovery")
        ok = outcomes["ok"]
        wait_until(lambda: outcomes["ok"] >= ok + 50, timeout=30, what="traffic after SIGCONT")
    finally:
        if stopped:
            redis_server.proc.send_signal(signal.SIGCONT)
        stop.set()
        # the commands stuck on the stopped server end with the server's answer after SIGCONT
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a worker hung"


def test_long_holders_on_a_live_server_are_no_outage(target, make_pool, wait_until,
                                                     start_thread):
    """Every slot held for longer than the probe timeout by callers that do not use it, with
    others queued: the stall probe is answered, so the endpoint stays ready and the queued
    callers get their connections when the holders let go."""
    sp.checker_config(interval=0.2, probe_timeout=0.2)
    _, url, kwargs = target
    pool = make_pool(url, max_connections=2, timeout=60, **kwargs)
    held = [pool.get_connection(), pool.get_connection()]
    got = []
    t = start_thread(lambda: got.append(pool.get_connection()))
    wait_until(lambda: pool.stats()["waiters"] == 1, what="the waiter to queue")
    probes = pool.stats()["probes"]
    wait_until(lambda: pool.stats()["probes"] >= probes + 2, timeout=20, what="stall probes")
    assert pool.stats()["state"] == "ready", pool.stats()
    pool.release(held.pop())
    t.join(timeout=10)
    assert got, "the queued caller was not served"
    for c in held + got:
        pool.release(c)
    assert pool.stats()["transitions"] == 0, pool.stats()
