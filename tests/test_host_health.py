"""scope="host" health: one process learns the server is down and every process fails fast, one probe per host."""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading
import time
from typing import Any, Dict, List

import pytest
import redis

import redis_safepool as sp
from redis_safepool._pool_base import host_segment_name
from redis_safepool._endpoint_keys import endpoint_of

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="host scope is Linux only")

PROCESSES = 4
BUDGET = 8
BACKOFF = 0.05  # the checker's backoff while down: one process probes at most every 25 ms


@pytest.fixture
def host_url(redis_server) -> Any:
    url = redis_server.url
    yield url
    key = endpoint_of(redis.Connection, redis.connection.parse_url(url))[0]
    try:
        os.unlink("/dev/shm" + host_segment_name(key))
    except FileNotFoundError:
        pass


def _worker(url: str, ctl: Any) -> None:
    """One process of the host: its own pool, commands from the parent over `ctl`."""
    import redis
    import redis_safepool as sp

    sp.checker_config(backoff_min=BACKOFF, backoff_max=BACKOFF, recover_interval=0.05)
    pool = sp.SafeConnectionPool.from_url(url, max_connections=BUDGET, scope="host", timeout=10)
    client = redis.Redis(connection_pool=pool)
    client.ping()
    pool.disconnect()  # no idle socket whose hangup would tell this process by itself
    ctl.send("ready")
    while True:
        cmd = ctl.recv()
        if cmd == "try":
            try:
                client.ping()
                ctl.send(("ok", "", pool.stats()))
            except sp.ServerUnavailableError as exc:
                ctl.send(("unavailable", str(exc), pool.stats()))
            except redis.ConnectionError as exc:
                ctl.send(("connection error", str(exc), pool.stats()))
        elif cmd == "work":
            ctl.send(_work_until_served(client, sp))
        elif cmd == "stats":
            ctl.send(pool.stats())
        else:
            pool.disconnect()
            return


def _work_until_served(client: Any, sp: Any) -> int:
    """BUDGET threads, each retrying until one command succeeds (bounded): how many did."""
    done = [0] * BUDGET

    def run(i: int) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                client.ping()
                done[i] = 1
                return
            except (sp.ServerUnavailableError, redis.ConnectionError):
                time.sleep(0.005)  # paused or recovering: ask again (a bounded retry loop)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(BUDGET)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return sum(done)


class CountingListener:
    """Accepts on the dead server's port and closes at once ("server down", not refused):
    counts every connection the host sends it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.sock.settimeout(0.05)
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            conn.close()
            self.accepted += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sock.close()


def _ask(ctls: List[Any], cmd: str, timeout: float = 60) -> List[Any]:
    for c in ctls:
        c.send(cmd)
    out = []
    for c in ctls:
        assert c.poll(timeout), f"a worker did not answer {cmd!r}"
        out.append(c.recv())
    return out


def test_down_server_fails_every_process_fast_with_one_probe_per_host(host_url, redis_server,
                                                                     wait_until):
    ctx = multiprocessing.get_context("fork")
    pipes = [ctx.Pipe() for _ in range(PROCESSES)]
    procs = [ctx.Process(target=_worker, args=(host_url, child)) for _, child in pipes]
    ctls = [parent for parent, _ in pipes]
    for p in procs:
        p.start()
    listener = None
    try:
        assert [c.recv() for c in ctls] == ["ready"] * PROCESSES

        redis_server.kill()
        listener = CountingListener(redis_server.port)
        # The first process finds out the slow way; every other one fails fast.
        first = _ask(ctls[:1], "try")[0]
        assert first[0] in ("connection error", "unavailable"), first
        wait_until(lambda: sp.host_stats(host_url)["state"] == "paused", 10,
                   "the first process's checker to publish the pause")
        for outcome, text, stats in _ask(ctls[1:], "try"):
            assert outcome == "unavailable", (outcome, text)
            assert stats["state"] == "paused"
            assert stats["connect_failures"] == 0  # no connect of its own to find out

        # While it is down: one process probes for the host.
        before, t0 = listener.accepted, time.monotonic()
        time.sleep(1.5)  # the window over which probes are counted, not a synchronisation
        window, probes = time.monotonic() - t0, listener.accepted - before
        one_process_at_most = window / (BACKOFF / 2) + 3
        assert 3 <= probes <= one_process_at_most, (
            f"{probes} probes reached the server in {window:.2f}s from {PROCESSES} processes "
            f"(one process alone sends at most {one_process_at_most:.0f})")
        view = sp.host_stats(host_url)
        assert view["state"] == "paused"
        assert view["probes_skipped"] > 0  # the others looked, and left it to the holder

        # Back: every process is served, within the host's budget, its connects
        # under the host's one max_connecting.
        listener.close()
        listener = None
        redis_server.restart()
        samples: List[Dict[str, int]] = []
        peak = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append(sp.host_stats(host_url))
                try:
                    peak[0] = max(peak[0], redis_server.live_clients())
                except (redis.ConnectionError, OSError):
                    pass

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            served = _ask(ctls, "work", timeout=120)
        finally:
            stop.set()
            sampler.join(10)
        assert served == [BUDGET] * PROCESSES
        assert samples
        over = [s for s in samples if s["connecting"] > s["max_connecting"]]
        assert not over, over[:3]
        assert peak[0] <= BUDGET, f"the server saw {peak[0]} clients (budget {BUDGET})"
    finally:
        if listener is not None:
            listener.close()
        for c in ctls:
            try:
                c.send("exit")
            except OSError:
                pass
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
