"""Servers that accept and never answer (SIGSTOP) delay neither other endpoints' decisions nor exit."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import List

import pytest

import redis_safepool as sp
from redis_safepool.testing import RedisServer

PROBE_TIMEOUT = 30.0   # a black-holed probe's deadline: nothing here may wait for it
N_HOLES = 8



@pytest.fixture
def black_holes(redis_server_factory):
    """Eight redis-servers stopped with SIGSTOP: the kernel accepts, nobody answers."""
    servers: List[RedisServer] = [redis_server_factory() for _ in range(N_HOLES)]
    for s in servers:
        s.proc.send_signal(signal.SIGSTOP)
    yield servers
    for s in servers:
        if s.proc is not None:
            s.proc.send_signal(signal.SIGCONT)


def test_killed_server_pauses_while_black_holed_probes_wait(black_holes, redis_server, make_pool,
                                                           wait_until):
    """The killed server's pause comes while every black-holed probe is still in
    flight, undecided: its decision does not wait behind theirs."""
    sp.checker_config(interval=0.05, probe_timeout=PROBE_TIMEOUT)
    holes = [make_pool(s.url, max_connections=4) for s in black_holes]
    live = make_pool(redis_server.url, max_connections=4, timeout=5)
    wait_until(lambda: live.stats()["run_id"], what="a first probe of the live server")
    # every black-holed endpoint has its probe connected and waiting for a reply
    wait_until(lambda: all(p.stats()["connecting"] >= 1 for p in holes),
               what="a probe in flight on every black-holed server")
    busy = live.get_connection()
    redis_server.kill()
    wait_until(lambda: live.stats()["state"] == "paused", what="the killed server's pause")
    for p in holes:
        stats = p.stats()
        assert stats["probes"] == 0 and stats["state"] == "ready", stats
        assert stats["connecting"] >= 1, stats   # still waiting for its deadline
    live.release(busy)


EXIT_SCRIPT = """
import sys, time, redis_safepool as sp
sp.checker_config(interval=0.05, probe_timeout=float(sys.argv[2]))
pools = [sp.SafeConnectionPool.from_url(url, max_connections=4) for url in sys.argv[3:]]
bound = time.monotonic() + 20
while not any(p.stats()["connecting"] >= 1 for p in pools):
    assert time.monotonic() < bound, "no probe in flight"
    time.sleep(0.01)
assert sp._core.checker_running()
print(time.monotonic(), flush=True)
"""


def test_interpreter_exit_does_not_wait_for_probes(black_holes):
    """Exit with probes in flight to black-holed servers: the checker stops and the
    process ends long before any probe's deadline."""
    proc = subprocess.Popen([sys.executable, "-c", EXIT_SCRIPT, "x", str(PROBE_TIMEOUT)]
                            + [s.url for s in black_holes],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=PROBE_TIMEOUT + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    ended = time.monotonic()
    assert proc.returncode == 0, err
    exiting_at = float(out.strip())
    # the probes were started before exiting_at, so their deadlines are later than
    # exiting_at + PROBE_TIMEOUT; the process was gone well before that
    assert ended < exiting_at + PROBE_TIMEOUT / 3, (ended - exiting_at)
