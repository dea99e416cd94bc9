"""Fleet-aware admission against real servers: the reserve holds, the allowance follows maxclients."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional

import pytest
import redis

import redis_safepool as sp
from redis_safepool.testing import free_port

WORKER = os.path.join(os.path.dirname(__file__), "fleet_worker.py")


OPERATOR = "fleet-operator"


class Watch:
    """Samples the clients the server holds over one connection of its own (CLIENT LIST: the
    peak counts all of them, this one included, but the operator's), and plays the operator: a
    fresh connection and a PING every 100 ms, counting the ones refused for want of room (max
    number of clients reached). Both go on through a restart of the server.

    The operator's connection comes and goes, and may use the reserve (that is what it is
    kept for); everything else counts against maxclients - reserve."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.peak = 0
        self.operator_refused = 0
        self.operator_failed = 0
        self.operator_ok = 0
        self._stop = threading.Event()
        self._monitor = redis.Redis.from_url(url)
        self._threads = [threading.Thread(target=self._sample, daemon=True),
                         threading.Thread(target=self._operator, daemon=True)]

    def __enter__(self) -> "Watch":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        self._monitor.close()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            try:
                listed = self._monitor.client_list()
            except redis.ConnectionError:
                continue  # the server is down (restarted by the test)
            self.peak = max(self.peak, sum(1 for c in listed if c.get("name") != OPERATOR))

    def _operator(self) -> None:
        while not self._stop.wait(0.1):
            op = redis.Redis.from_url(self.url, socket_connect_timeout=2, client_name=OPERATOR)
            try:
                op.ping()
                self.operator_ok += 1
            except redis.ConnectionError as exc:
                if "max number of clients" in str(exc):
                    self.operator_refused += 1
                else:
                    self.operator_failed += 1  # nothing listening: down
            finally:
                op.close()

    def rejected(self) -> int:
        return int(self._monitor.info("stats")["rejected_connections"])


def run_fleet(url: str, hosts: int, threads: int, max_connections: int, seconds: float,
              meanwhile: Callable[[], None] = lambda: None,
              probe_interval: Optional[float] = None) -> List[Dict]:
    """Runs the hosts for `seconds`, and `meanwhile()` in this process once they have started.
    `probe_interval`: the hosts' checker interval (None: the default)."""
    argv = [sys.executable, WORKER, url, str(threads), str(max_connections), str(seconds)]
    if probe_interval is not None:
        argv.append(str(probe_interval))
    procs = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(hosts)]
    try:
        for p in procs:  # each host has read the server's view before the load starts
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        meanwhile()
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=seconds + 60)
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


@pytest.mark.parametrize("hosts,max_connections,probe_interval", [
    (4, 8, None),  # 32 connections wanted of a server that takes 24 (reserve 4)
    # Each host at its budget, the fleet (and the monitor) one below the line, and views read
    # every 20 ms: the hosts' view probes overlap all the time. Each is one of its host's
    # connections, so together they never reach into the reserve.
    (9, 2, 0.02),
])
def test_reserve_holds_with_several_processes(redis_server_factory, hosts, max_connections,
                                              probe_interval):
    server = redis_server_factory(maxclients=24)
    with Watch(server.url) as watch:
        results = run_fleet(server.url, hosts=hosts, threads=8, max_connections=max_connections,
                            seconds=3, probe_interval=probe_interval)
        rejected = watch.rejected()
    assert rejected == 0, results
    assert watch.operator_refused == 0 and watch.operator_ok > 0
    # the reserve stays free as the server counts it, the hosts' view probes included
    assert watch.peak <= 24 - 4, (watch.peak, results)
    assert all(r["ops"] > 0 for r in results), results  # every host completes commands
    assert sum(r["errors"] for r in results) == 0, results


def test_fleet_comes_back_after_a_restart_without_a_rejected_connection(redis_server_factory):
    # 6 hosts x 8 threads want 48 connections of a server that takes 32 (reserve 4). After a
    # restart every host reads an empty server at about the same moment: growing back must
    # stay gradual, or the hosts together take more than the server has.
    server = redis_server_factory(maxclients=32)
    restarted = []

    def kill_and_restart() -> None:
        time.sleep(1.0)  # the fleet under load, at the line
        server.kill()
        time.sleep(0.3)  # down: every host pauses
        server.start(any_answer=True)
        restarted.append(time.monotonic())

    with Watch(server.url) as watch:
        results = run_fleet(server.url, hosts=6, threads=8, max_connections=8, seconds=4,
                            meanwhile=kill_and_restart)
        rejected = watch.rejected()  # since the restart: a new server counts from 0
    assert rejected == 0, results
    assert watch.operator_refused == 0 and watch.operator_ok > 0
    # The hosts' view probes are in their allowances, but a host still paused probes (knocks)
    # outside it, and hosts that read one headroom at once may both grow: one connection
    # into the reserve is seen now and then here. Without gradual regrowth the whole fleet
    # comes back at once and fills the server.
    assert watch.peak <= 32 - 4 + 1, (watch.peak, results)
    # every host works again after the restart
    assert all(r["last_ok"] > restarted[0] for r in results), (restarted, results)


def _busy(client: redis.Redis, stop: threading.Event, errors: List[str], threads: int) -> List[threading.Thread]:
    def work() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                client.blpop(["fleet:nothing"], timeout=0.01)
            except Exception as exc:  # any error here fails the test below
                errors.append(f"{type(exc).__name__}: {exc}")
    ts = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    return ts


@pytest.fixture
def quick_views():
    sp.checker_config(interval=0.1, recover_interval=0.05)


def test_maxclients_lowered_then_raised_under_load(redis_server_factory, make_pool, wait_until,
                                                    quick_views):
    server = redis_server_factory(maxclients=100)
    # 16 threads, a budget of 20: the probe always has a spare slot
    pool = make_pool(server.url, max_connections=20, timeout=10)
    client = redis.Redis(connection_pool=pool)
    stop, errors = threading.Event(), []
    threads = _busy(client, stop, errors, 16)
    try:
        # at its budget, nothing being connected: the change catches no connect half-way
        wait_until(lambda: pool.stats()["in_use"] + pool.stats()["idle"] == 16,
                   what="the pool at its budget")
        server.command("CONFIG", "SET", "maxclients", "12")  # reserve 4: 8 for everyone
        # over the new maxclients nothing gets in, not even a probe: the allowance halves
        # at each rejection until the view can be read again
        wait_until(lambda: pool.stats()["total"] <= 8 and pool.stats()["server_maxclients"] == 12,
                   what="the pool shrinking under maxclients")
        st = pool.stats()
        assert st["allowance"] <= 8 and st["allowance_decreases"] >= 1, st
        low = st["allowance"]
        seen = set()
        server.command("CONFIG", "SET", "maxclients", "40")  # room for 16, not far beyond
        rejected = int(server.info("stats")["rejected_connections"])

        def grown() -> bool:
            seen.add(pool.stats()["allowance"])
            return pool.stats()["total"] >= 15
        wait_until(grown, what="the pool growing back")
        # gradually: through allowances between the low one and the budget
        assert any(low < a < 16 for a in seen), (low, sorted(seen))
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []
    # growing back costs no rejected connection
    assert int(server.info("stats")["rejected_connections"]) == rejected


def test_a_budget_full_before_the_first_look_still_reads_the_view(redis_server_factory,
                                                                   make_pool, wait_until,
                                                                   quick_views):
    # every connection is busy, and callers wait for one, before the checker first looks
    # at the endpoint: the usual probe has no spare slot, yet the server's view must be
    # read once (through a connection lent for one round trip while callers wait anyway)
    server = redis_server_factory(maxclients=30)
    sp.checker_config(enabled=False)
    pool = make_pool(server.url, max_connections=4, timeout=10)
    client = redis.Redis(connection_pool=pool)
    stop, errors = threading.Event(), []
    threads = _busy(client, stop, errors, 6)
    try:
        wait_until(lambda: pool.stats()["in_use"] == 4, what="every connection busy")
        assert pool.stats()["server_maxclients"] is None
        sp.checker_config(enabled=True)
        wait_until(lambda: pool.stats()["server_maxclients"] == 30, what="the server's view")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []


def test_external_client_fills_the_server(redis_server_factory, make_pool, wait_until,
                                          quick_views):
    server = redis_server_factory(maxclients=30)  # reserve 4
    pool = make_pool(server.url, max_connections=8, timeout=10)
    client = redis.Redis(connection_pool=pool)
    stop, errors = threading.Event(), []
    threads = _busy(client, stop, errors, 10)  # more callers than connections: some wait
    others: List[redis.Redis] = []
    try:
        wait_until(lambda: pool.stats()["total"] >= 7, what="the pool at its budget")
        for _ in range(20):  # someone else takes 20 of the 30
            other = redis.Redis.from_url(server.url)
            other.ping()
            others.append(other)
        wait_until(lambda: pool.stats()["state"] == "saturated", what="saturated")
        wait_until(lambda: pool.stats()["total"] < 8, what="the pool backing off")
        st = pool.stats()
        assert st["server_headroom"] is not None and st["server_headroom"] >= 1, st
        assert "saturated" in (st["state_reason"] or ""), st
        for other in others:
            other.close()
        others.clear()
        wait_until(lambda: pool.stats()["state"] == "ready", what="ready again")
        wait_until(lambda: pool.stats()["total"] >= 7, what="the pool growing again")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        for other in others:
            other.close()
    assert errors == []
    assert int(server.info("stats")["rejected_connections"]) == 0


def test_process_without_connections_fails_naming_the_saturation(redis_server_factory, make_pool,
                                                                 wait_until, quick_views):
    server = redis_server_factory(maxclients=20)  # reserve 4
    others = [redis.Redis.from_url(server.url) for _ in range(17)]  # headroom 3
    try:
        for other in others:
            other.ping()
        pool = make_pool(server.url, max_connections=4, timeout=0.3)
        wait_until(lambda: pool.stats()["state"] == "saturated", what="saturated")
        started = time.monotonic()
        with pytest.raises(sp.ServerUnavailableError) as info:
            pool.get_connection()
        assert time.monotonic() - started >= 0.25  # it waited its timeout first
        message = str(info.value)
        assert "saturated" in message and "/20 clients connected" in message, message
        assert isinstance(info.value, redis.ConnectionError)
        assert pool.stats()["in_use"] + pool.stats()["idle"] == 0  # (a probe may hold a slot)
        assert int(server.info("stats")["rejected_connections"]) == 0
        # room again: the same pool connects
        for other in others[:8]:
            other.close()
        wait_until(lambda: pool.stats()["state"] == "ready", what="ready again")
        assert redis.Redis(connection_pool=pool).ping() is True
    finally:
        for other in others:
            other.close()


def test_user_without_info_keeps_todays_rules(redis_server_factory, make_pool, wait_until,
                                              quick_views):
    server = redis_server_factory(maxclients=20)
    server.command("ACL", "SETUSER", "limited", "on", ">limited-pw", "~*", "+@all", "-info")
    pool = make_pool(f"redis://limited:limited-pw@127.0.0.1:{server.port}/0", max_connections=8,
                     timeout=5)
    client = redis.Redis(connection_pool=pool)
    assert client.ping() is True
    wait_until(lambda: "NOPERM" in (pool.stats()["server_view_error"] or ""),
               what="the view reported unavailable")
    st = pool.stats()
    assert st["server_maxclients"] is None and st["server_headroom"] is None, st
    assert st["allowance"] == 8 and st["state"] == "ready", st
    assert "limited-pw" not in repr(st)
    assert client.set("k", "v") and client.get("k") == b"v"


def test_checker_config_reserve_arguments():
    before = sp.checker_config()
    assert before["server_reserve"] == pytest.approx(0.1) and before["server_reserve_min"] == 4
    assert sp.checker_config(server_reserve=0.2, server_reserve_min=2)["server_reserve"] == 0.2
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="server_reserve"):
            sp.checker_config(server_reserve=bad)
    with pytest.raises(TypeError, match="server_reserve"):
        sp.checker_config(server_reserve="0.1")
    with pytest.raises(ValueError, match="server_reserve_min"):
        sp.checker_config(server_reserve_min=-1)
    with pytest.raises(TypeError, match="server_reserve_min"):
        sp.checker_config(server_reserve_min=2.5)


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem")], check=True, capture_output=True, timeout=60)
    return d


def test_tls_server_at_maxclients_is_overload_not_death(redis_server_factory, make_pool, cert,
                                                       wait_until, caplog, quick_views):
    # at maxclients a TLS server accepts TCP and closes before the handshake: an EOF, no error line
    port = free_port()
    redis_server_factory(maxclients=3, tls_port=port, tls_cert_file=cert / "cert.pem",
                         tls_key_file=cert / "key.pem", tls_ca_cert_file=cert / "cert.pem",
                         tls_auth_clients="no")
    url = f"rediss://127.0.0.1:{port}/0"
    others = [redis.Redis.from_url(url, ssl_cert_reqs=None) for _ in range(3)]
    try:
        for other in others:
            other.ping()
        pool = make_pool(url, max_connections=4, timeout=2, ssl_cert_reqs=None)
        caplog.set_level("INFO", logger="redis_safepool")
        with pytest.raises(redis.ConnectionError) as info:
            redis.Redis(connection_pool=pool).ping()
        assert "EOF" in str(info.value)
        wait_until(lambda: any("-> overloaded" in r.getMessage() for r in caplog.records),
                   what="the handshake EOF taken for overload")
        assert not any("-> paused" in r.getMessage() for r in caplog.records)
        others.pop().close()
        wait_until(lambda: pool.stats()["state"] == "ready", what="ready again")
        client = redis.Redis(connection_pool=pool)
        wait_until(lambda: _pings_ok(client), what="a PING through the pool")
    finally:
        for other in others:
            other.close()


def _pings_ok(client: redis.Redis) -> bool:
    try:
        return client.ping() is True
    except redis.ConnectionError:  # still overloaded for a moment: failing fast
        return False


def test_asyncio_process_without_connections_fails_naming_the_saturation(
        redis_server_factory, wait_until, quick_views):
    import asyncio

    from redis_safepool.asyncio import SafeConnectionPool as AsyncPool

    server = redis_server_factory(maxclients=20)  # reserve 4
    others = [redis.Redis.from_url(server.url) for _ in range(17)]  # headroom 3
    try:
        for other in others:
            other.ping()

        async def main() -> None:
            pool = AsyncPool.from_url(server.url, max_connections=4, timeout=0.3)
            try:
                wait_until(lambda: pool.stats()["state"] == "saturated", what="saturated")
                with pytest.raises(sp.ServerUnavailableError, match="saturated: .*/20 clients"):
                    await pool.get_connection()
                assert pool.stats()["in_use"] + pool.stats()["idle"] == 0  # (a probe may hold a slot)
            finally:
                await pool.aclose()
        asyncio.run(main())
        assert int(server.info("stats")["rejected_connections"]) == 0
    finally:
        for other in others:
            other.close()
