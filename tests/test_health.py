"""Health checker and endpoint states against real redis-servers that are killed, filled, slowed and loaded."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List

import pytest
import redis
import redis.connection

import redis_safepool as sp
from redis_safepool import _core
from redis_safepool.testing import RedisServer, _command, _server_env

FAST = dict(interval=0.2, recover_interval=0.05, backoff_min=0.02, backoff_max=0.1)
LOOP_BOUND = 100_000   # every worker loop stops after this many iterations, whatever happens



@pytest.fixture
def fast_checker():
    sp.checker_config(**FAST)


@pytest.fixture
def debug_server(redis_server_factory) -> RedisServer:
    """A server that accepts DEBUG (off by default since Redis 7)."""
    return redis_server_factory(enable_debug_command="yes")


def state_of(pool) -> str:
    return pool.stats()["state"]


class ConnectCounter:
    """Counts redis-py socket connects (every pool's connections are redis.Connection)."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        orig = redis.connection.Connection._connect

        def counted(conn):
            self.count += 1
            return orig(conn)

        monkeypatch.setattr(redis.connection.Connection, "_connect", counted)


class Hammer:
    """Threads running GET in a bounded loop until stopped; errors are recorded, never raised."""

    def __init__(self, pool, threads: int, start_thread) -> None:
        self.client = redis.Redis(connection_pool=pool)
        self.stop = threading.Event()
        self.ok = 0
        self.errors: List[BaseException] = []
        self.errors_after: Dict[str, int] = {}
        self.mark = float("inf")       # errors of commands issued after this are counted apart
        self.threads = [start_thread(self._run) for _ in range(threads)]

    def _run(self) -> None:
        for _ in range(LOOP_BOUND):
            if self.stop.is_set():
                return
            began = time.monotonic()
            try:
                self.client.get("k")
                self.ok += 1
            except redis.exceptions.RedisError as exc:
                self.errors.append(exc)
                if began >= self.mark:
                    name = type(exc).__name__
                    self.errors_after[name] = self.errors_after.get(name, 0) + 1
                self.stop.wait(0.005)

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "a worker hung"


def max_server_clients(server: RedisServer, stop: threading.Event, out: List[int]) -> None:
    """Sampler thread body: the highest connected_clients seen while the server is up."""
    for _ in range(LOOP_BOUND):
        if stop.is_set():
            return
        try:
            out.append(server.connected_clients())
        except (OSError, KeyError, ValueError):
            pass  # down, or refused while starting
        stop.wait(0.005)


# --------------------------------------------------------------------------- restart


def test_restart_under_many_threads(redis_server, make_pool, wait_until, start_thread,
                                    fast_checker, caplog):
    caplog.set_level(logging.INFO, logger="redis_safepool")
    states: List[str] = []
    sp._events.add_listener(lambda when, ep, old, new, reason:
                            states.append(new) if ep.endswith(f":{redis_server.port}/0") else None)
    pool = make_pool(redis_server.url, max_connections=8, timeout=5)
    redis.Redis(connection_pool=pool).set("k", "v")
    hammer = Hammer(pool, 32, start_thread)
    sampled: List[int] = []
    stop_sampler = threading.Event()
    sampler = start_thread(max_server_clients, redis_server, stop_sampler, sampled)
    try:
        wait_until(lambda: hammer.ok > 200, what="traffic before the kill")
        # 32 threads keep all 8 slots busy, so no probe runs while ready (a probe
        # never takes a slot a caller may need): the outage itself must bump the
        # generation (pause), not a run_id comparison
        generation = pool.stats()["generation"]
        redis_server.kill()
        wait_until(lambda: state_of(pool) == "paused", what="paused after the kill")
        redis_server.start()
        wait_until(lambda: state_of(pool) == "ready", what="ready after the restart")
        assert pool.stats()["generation"] > generation, "restart did not bump the generation"
        hammer.mark = time.monotonic()
        ok = hammer.ok
        wait_until(lambda: hammer.ok > ok + 200, what="traffic after the restart")
    finally:
        hammer.join()
        stop_sampler.set()
        sampler.join(timeout=10)
    # no stale connection was handed out once the endpoint was ready again
    assert hammer.errors_after == {}
    assert sampled and max(sampled) <= 8
    wait_until(lambda: "ready" in states, what="the ready event")
    i = states.index("paused")
    assert "recovering" in states[i:] and states.index("ready", i) > states.index("recovering", i)
    wait_until(lambda: any("-> ready" in r.getMessage() for r in caplog.records),
               what="the transition to ready in the log")
    messages = [r.getMessage() for r in caplog.records if r.name == "redis_safepool"]
    assert any("ready -> paused" in m for m in messages)
    assert any("paused -> recovering" in m for m in messages)
    assert any("recovering -> ready" in m for m in messages)
    assert pool.stats()["transitions"] >= 3


def test_recovering_probe_stays_within_budget(redis_server, make_pool, wait_until, start_thread,
                                              fast_checker):
    pool = make_pool(redis_server.url, max_connections=4, timeout=5)
    redis.Redis(connection_pool=pool).set("k", "v")
    # learn the run_id before the load: a saturated budget is not probed while
    # ready (later rounds learn it from the probes while recovering)
    wait_until(lambda: pool.stats()["run_id"], what="a first probe")
    hammer = Hammer(pool, 16, start_thread)
    sampled: List[int] = []
    stop_sampler = threading.Event()
    sampler = start_thread(max_server_clients, redis_server, stop_sampler, sampled)
    try:
        for _ in range(5):
            wait_until(lambda: pool.stats()["run_id"], what="a probe")
            redis_server.kill()
            wait_until(lambda: state_of(pool) == "paused", what="paused")
            redis_server.start()
            wait_until(lambda: state_of(pool) == "ready", what="ready")
    finally:
        hammer.join()
        stop_sampler.set()
        sampler.join(timeout=10)
    assert max(sampled) <= 4


def test_connections_after_restart_are_new(redis_server, make_pool, wait_until, fast_checker):
    pool = make_pool(redis_server.url, max_connections=4, timeout=5)
    conns = [pool.get_connection() for _ in range(3)]
    for c in conns:
        c.send_command("CLIENT", "SETNAME", "before-restart")
        assert c.read_response() in (b"OK", "OK")
    for c in conns:
        pool.release(c)
    wait_until(lambda: pool.stats()["run_id"], what="a first probe")
    generation = pool.stats()["generation"]
    redis_server.restart()
    wait_until(lambda: state_of(pool) == "ready" and pool.stats()["generation"] > generation,
               what="ready in a new generation after the restart")
    for _ in range(3):
        c = pool.get_connection()
        try:
            c.send_command("CLIENT", "GETNAME")
            assert c.read_response() is None  # a connection to the new server process
        finally:
            pool.release(c)


def test_fail_fast_while_paused(redis_server, make_pool, wait_until, start_thread, monkeypatch):
    pool = make_pool(redis_server.url, max_connections=2, timeout=30)
    first, second = pool.get_connection(), pool.get_connection()
    outcome: Dict[int, BaseException] = {}

    def waiter(i: int) -> None:
        try:
            pool.release(pool.get_connection())
        except BaseException as exc:
            outcome[i] = exc

    waiters = []
    for i in range(2):
        waiters.append(start_thread(waiter, i))
        wait_until(lambda: pool.stats()["waiters"] == i + 1, what=f"waiter {i}")
    redis_server.kill()
    with pytest.raises(redis.exceptions.ConnectionError):
        first.send_command("PING")
        first.read_response()
    # the broken connection goes to the head waiter, whose reconnect is refused: that
    # pauses the endpoint, and the waiter behind it is failed at once (not after 30 s)
    pool.release(first)
    for t in waiters:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in waiters), "a waiter was not woken by the pause"
    assert state_of(pool) == "paused"
    assert isinstance(outcome[0], redis.exceptions.ConnectionError)
    assert isinstance(outcome[1], sp.ServerUnavailableError), outcome
    pool.release(second)

    counter = ConnectCounter(monkeypatch)
    refused = pool.stats()["refused_by_state"]
    client = redis.Redis(connection_pool=pool)
    for _ in range(200):
        with pytest.raises(sp.ServerUnavailableError) as info:
            client.get("k")
        assert isinstance(info.value, redis.exceptions.ConnectionError)
        assert "paused" in str(info.value) and "down" in str(info.value)
    assert counter.count == 0, "a request thread tried to connect while the endpoint was paused"
    assert pool.stats()["refused_by_state"] >= refused + 200


def test_server_death_under_busy_connections_pauses_at_once(redis_server, make_pool, wait_until,
                                                            start_thread):
    """Every connection checked out, a thread queued, nobody using a socket: the
    checker's watch sees the server's sockets close and pauses the endpoint; the
    next probe is 30 s away, so nothing else could."""
    sp.checker_config(interval=30.0)
    pool = make_pool(redis_server.url, max_connections=2, timeout=60)
    wait_until(lambda: pool.stats()["run_id"], what="a first probe")
    busy = [pool.get_connection(), pool.get_connection()]
    outcome: Dict[str, BaseException] = {}

    def waiter() -> None:
        try:
            pool.release(pool.get_connection())
        except BaseException as exc:
            outcome["exc"] = exc

    t = start_thread(waiter)
    wait_until(lambda: pool.stats()["waiters"] == 1, what="the waiter to queue")
    hangups = pool.stats()["peer_hangups"]
    redis_server.kill()
    t.join(timeout=20)
    assert not t.is_alive(), "the queued thread was left waiting on a dead server"
    assert isinstance(outcome.get("exc"), sp.ServerUnavailableError), outcome
    # the burst of hangups pauses first ("it closed 2 of our 2 connections"); the
    # probe's verdict follows: refused, or reset from a dying listen backlog
    wait_until(lambda: "server down" in pool.stats()["state_reason"], what="the probe's verdict")
    stats = pool.stats()
    assert stats["state"] == "paused", stats
    assert stats["peer_hangups"] >= hangups + 1
    for c in busy:
        pool.release(c)


def test_client_kill_of_busy_connection_is_not_an_outage(redis_server, make_pool, wait_until):
    """A hangup while the server still listens (CLIENT KILL) is counted and probed, not paused."""
    pool = make_pool(redis_server.url, max_connections=2, timeout=5)
    client = redis.Redis(connection_pool=pool)
    conn = pool.get_connection()
    conn.send_command("CLIENT", "ID")
    client_id = conn.read_response()
    hangups = pool.stats()["peer_hangups"]
    assert redis_server.command("CLIENT", "KILL", "ID", str(client_id)).startswith(b":1")
    wait_until(lambda: pool.stats()["peer_hangups"] > hangups, what="the hangup to be seen")
    assert state_of(pool) == "ready"
    with pytest.raises(redis.exceptions.ConnectionError):
        conn.send_command("PING")
        conn.read_response()
    pool.release(conn)
    assert client.ping() is True
    assert state_of(pool) == "ready"


# --------------------------------------------------------------------------- overload


def fill_server(server: RedisServer, bound: int) -> List[socket.socket]:
    """Open raw sockets until the server is full of them: it refuses one with "max number of
    clients" and, asked over a held socket, counts maxclients clients. A refusal alone is
    not enough: a client closed a moment before (a query's socket, a pool's) may still be
    counted, and once the server frees it there is room for one more."""
    socks: List[socket.socket] = []
    for _ in range(bound):
        s = socket.create_connection((server.host, server.port), timeout=2)
        s.sendall(b"PING\r\n")
        reply = s.recv(128)
        if reply.startswith(b"+PONG"):
            socks.append(s)
            continue
        s.close()
        assert b"max number of clients" in reply, reply
        clients = info_over(socks[0], "clients")
        if int(clients["connected_clients"]) >= int(clients["maxclients"]):
            return socks
    raise AssertionError(f"server still accepting after {bound} connections")


def info_over(sock: socket.socket, section: str) -> Dict[str, str]:
    """``INFO section`` sent over an already established raw connection, parsed."""
    sock.sendall(f"INFO {section}\r\n".encode())
    head = b""
    while b"\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"$"), head
    size = int(head[1:-2])
    body = b""
    while len(body) < size + 2:
        body += sock.recv(size + 2 - len(body))
    out: Dict[str, str] = {}
    for line in body.decode().splitlines():
        if ":" in line and not line.startswith("#"):
            key, value = line.split(":", 1)
            out[key] = value.strip()
    return out


def test_maxclients_reached(redis_server_factory, make_pool, wait_until, fast_checker):
    # Fleet-aware admission off: a probe that reads the server's view while fill_server()
    # is half done finds the headroom below the reserve and makes the endpoint saturated
    # (callers queue, nobody meets maxclients), which is another test's subject.
    sp.checker_config(server_reserve=0, server_reserve_min=0)
    server = redis_server_factory(maxclients=16)
    pool = make_pool(server.url, max_connections=8, timeout=0.5)
    client = redis.Redis(connection_pool=pool)
    client.set("k", "v")
    pool.disconnect()
    # the server frees our closed connections on its own time: fill it only
    # after (otherwise a slot frees up mid-test and the probe finds room)
    wait_until(lambda: server.connected_clients() == 0, what="our connections gone")
    socks = fill_server(server, 64)
    try:
        # the first refusal turns the endpoint overloaded; later acquires do not storm
        errors: Dict[str, int] = {}
        for _ in range(200):
            try:
                client.get("k")
            except redis.exceptions.ConnectionError as exc:
                name = type(exc).__name__
                errors[name] = errors.get(name, 0) + 1
            if state_of(pool) == "overloaded":
                break
        wait_until(lambda: state_of(pool) == "overloaded", what="overloaded")
        st = pool.stats()
        for _ in range(200):
            with pytest.raises(redis.exceptions.ConnectionError):
                client.get("k")
        # ask over a connection the server already holds: a new one would be rejected
        # too (or race our probes for a slot freed a moment before)
        rejected = int(info_over(socks[0], "stats")["rejected_connections"])
        after = pool.stats()  # after the count: every probe that could be in it is counted
        # request threads made at most one connection per budget slot; the rest are probes
        assert rejected <= 1 + 8 + after["probes"], (rejected, after)
        assert after["refused_by_state"] >= st["refused_by_state"] + 200
    finally:
        for s in socks:
            s.close()
    wait_until(lambda: state_of(pool) == "ready", what="ready once clients left")
    assert client.get("k") == b"v"


# --------------------------------------------------------------------------- slow servers


def test_debug_sleep_does_not_hang(debug_server, make_pool, wait_until, start_thread):
    pool = make_pool(debug_server.url, max_connections=4, timeout=5, socket_timeout=0.1)
    client = redis.Redis(connection_pool=pool)
    client.set("k", "v")
    sleeper = start_thread(lambda: debug_server.command("DEBUG", "SLEEP", "0.5"))
    wait_until(lambda: b"debug" in debug_server_clients_cmds(debug_server) or not sleeper.is_alive(),
               what="DEBUG SLEEP running")
    results: List[object] = []

    def one() -> None:
        try:
            results.append(client.get("k"))
        except redis.exceptions.RedisError as exc:
            results.append(exc)

    threads = [start_thread(one) for _ in range(8)]
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "a command outlived its socket timeout"
    assert len(results) == 8
    assert all(r == b"v" or isinstance(r, (redis.exceptions.TimeoutError,
                                           redis.exceptions.ConnectionError)) for r in results)
    sleeper.join(timeout=10)
    wait_until(lambda: _get_or_none(client) == b"v", what="the pool working after the sleep")
    assert pool.stats()["in_use"] == 0


def debug_server_clients_cmds(server: RedisServer) -> bytes:
    """CLIENT LIST output, lowercased; shows ``cmd=debug`` while DEBUG SLEEP runs."""
    try:
        return server.command("CLIENT", "LIST").lower()
    except OSError:
        return b""


def _get_or_none(client):
    try:
        return client.get("k")
    except redis.exceptions.RedisError:
        return None


def test_client_pause_keeps_working(redis_server, make_pool, wait_until, start_thread):
    pool = make_pool(redis_server.url, max_connections=4, timeout=5, socket_timeout=5)
    client = redis.Redis(connection_pool=pool)
    client.set("k", "v")
    assert redis_server.command("CLIENT", "PAUSE", "500").startswith(b"+OK")
    results: List[object] = []

    def one() -> None:
        try:
            results.append(client.get("k"))
        except redis.exceptions.RedisError as exc:
            results.append(exc)

    threads = [start_thread(one) for _ in range(8)]
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    assert results == [b"v"] * 8
    wait_until(lambda: state_of(pool) == "ready", what="ready after the pause")
    assert pool.stats()["in_use"] == 0


# --------------------------------------------------------------------------- loading


def spawn_without_waiting(server: RedisServer) -> None:
    """Start the (killed) server's process but do not wait for PONG: it may be LOADING."""
    server.proc = subprocess.Popen(server.argv(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=_server_env())


@pytest.mark.slow
def test_loading_fails_fast(debug_server, make_pool, wait_until, fast_checker):
    assert _command(debug_server.port, "DEBUG", "POPULATE", "2000000", timeout=120) == b"+OK\r\n"
    assert _command(debug_server.port, "SAVE", timeout=120) == b"+OK\r\n"
    pool = make_pool(debug_server.url, max_connections=4, timeout=5)
    client = redis.Redis(connection_pool=pool)
    assert client.get("key:1") == b"value:1"
    debug_server.kill()
    wait_until(lambda: state_of(pool) == "paused", what="paused after the kill")
    spawn_without_waiting(debug_server)
    seen = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            client.get("key:1")
            break  # loaded before we saw it loading
        except sp.ServerUnavailableError as exc:
            if "loading" in str(exc):
                seen = exc
                break
        except redis.exceptions.ConnectionError:
            pass
        time.sleep(0.005)
    if seen is None:
        pytest.skip("the server loaded its dataset before the pool could observe LOADING")
    # every checkout during the load fails fast with the reason
    for _ in range(20):
        try:
            client.get("key:1")
        except sp.ServerUnavailableError as exc:
            assert "loading" in str(exc) or "down" in str(exc)
    wait_until(lambda: state_of(pool) == "ready", timeout=60, what="ready after loading")
    assert client.get("key:1") == b"value:1"


# --------------------------------------------------------------------------- dead idle connections


def test_client_kill_idle_connections(redis_server, make_pool, wait_until):
    pool = make_pool(redis_server.url, max_connections=4, timeout=5)
    conns = [pool.get_connection() for _ in range(4)]
    for c in conns:
        pool.release(c)
    assert pool.stats()["idle"] == 4
    dead = pool.stats()["dead_idle_closed"]
    reply = redis_server.command("CLIENT", "KILL", "TYPE", "normal")
    assert reply.startswith(b":") and int(reply[1:]) >= 4
    wait_until(lambda: pool.stats()["dead_idle_closed"] >= dead + 4,
               what="the checker closing the killed idle connections")
    assert pool.stats()["idle"] == 0
    client = redis.Redis(connection_pool=pool)
    assert client.ping() is True


def test_client_kill_then_immediate_checkout(redis_server, make_pool):
    sp.checker_config(enabled=False)  # the checkout, not the checker, must notice
    pool = make_pool(redis_server.url, max_connections=2, timeout=5)
    client = redis.Redis(connection_pool=pool)
    client.set("k", "v")
    redis_server.command("CLIENT", "KILL", "TYPE", "normal")
    assert client.get("k") == b"v"


def test_server_timeout_closes_idle(redis_server, make_pool, wait_until):
    pool = make_pool(redis_server.url, max_connections=2, timeout=5)
    client = redis.Redis(connection_pool=pool)
    client.set("k", "v")
    dead = pool.stats()["dead_idle_closed"]
    assert redis_server.command("CONFIG", "SET", "timeout", "1").startswith(b"+OK")
    wait_until(lambda: pool.stats()["dead_idle_closed"] > dead, timeout=20,
               what="the server's idle timeout closing the pooled connection")
    assert client.get("k") == b"v"


# --------------------------------------------------------------------------- checker lifecycle


def test_checker_restarts_in_forked_child(redis_server, make_pool):
    pool = make_pool(redis_server.url, max_connections=2, timeout=5)
    redis.Redis(connection_pool=pool).ping()
    assert _core.checker_running()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        try:
            signal_alarm(30)
            before = _core.checker_running()
            redis.Redis(connection_pool=pool).ping()
            after = _core.checker_running()
            os.write(write_fd, f"{before} {after}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as r:
        report = r.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, report
    assert report == "False True"
    assert _core.checker_running()  # the parent's thread is untouched


def signal_alarm(seconds: int) -> None:
    import signal
    signal.alarm(seconds)


EXIT_SCRIPT = """
import redis, redis_safepool as sp, sys
pool = sp.SafeConnectionPool.from_url(sys.argv[1], max_connections=2)
r = redis.Redis(connection_pool=pool)
try:
    r.ping()
except redis.exceptions.ConnectionError:
    pass
assert sp._core.checker_running()
"""


@pytest.mark.parametrize("up", [True, False], ids=["server-up", "server-down"])
def test_interpreter_exit_stops_checker(redis_server, up):
    if not up:
        redis_server.kill()  # the checker is probing with backoff when the interpreter exits
    proc = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, redis_server.url],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_checker_config_round_trip():
    before = sp.checker_config()
    changed = sp.checker_config(interval=0.5, backoff_max=0.2)
    assert changed["interval"] == 0.5 and changed["backoff_max"] == 0.2
    assert changed["recover_interval"] == before["recover_interval"]


@pytest.mark.usefixtures("no_checker")  # only the report decides the state
def test_a_refused_connect_is_read_from_its_cause_not_its_words(redis_server, make_pool):
    # redis-py raises its ConnectionError inside the connect's `except OSError`: the
    # errno is in the chain whatever the message says (its words vary by version,
    # locale and library), and a message alone that mentions refusal is not one
    pool = make_pool(f"redis://{redis_server.host}:{redis_server.port}/0", max_connections=2)
    worded = redis.exceptions.ConnectionError("Connection refused (as a message only)")
    pool._report_exception(worded)
    assert pool.stats()["state"] == "ready"
    try:
        try:
            raise ConnectionRefusedError(111, "no listener")
        except OSError as cause:
            raise redis.exceptions.ConnectionError("could not connect") from cause
    except redis.exceptions.ConnectionError as chained:
        pool._report_exception(chained)
    assert pool.stats()["state"] == "paused"
