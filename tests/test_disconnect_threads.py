"""pool.disconnect() while other threads have connections out: only a connection's holder closes it."""

from __future__ import annotations

import threading
from collections import Counter
from typing import List, Tuple

import redis
import redis.exceptions
from process_clients import PeakClients

MAX = 3
WORKERS = 8
DISCONNECTS = 300
LOOP_BOUND = 100_000   # every worker loop stops after this many iterations, whatever happens


class Workers:
    """Threads that each SET and GET a key of their own and check every reply they read."""

    def __init__(self, client: redis.Redis, start_thread) -> None:
        self.client = client
        self.stop = threading.Event()
        self.ops = 0
        self.wrong: List[Tuple[str, object]] = []
        self.errors: Counter = Counter()
        self.threads = [start_thread(self._run, i) for i in range(WORKERS)]

    def _run(self, i: int) -> None:
        key = f"held:{i}"
        for n in range(LOOP_BOUND):
            if self.stop.is_set():
                return
            value = f"{i}:{n}"
            try:
                self.client.set(key, value)
                got = self.client.get(key)
            except redis.exceptions.RedisError as exc:
                self.errors[f"{type(exc).__name__}: {exc}"] += 1
                continue
            if got != value.encode():
                self.wrong.append((value, got))
            self.ops += 1

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "a worker hung"


def test_disconnect_never_closes_a_socket_under_another_thread(redis_server, make_pool,
                                                                wait_until, start_thread):
    # Closing a socket another thread is reading lets it read a closed fd (EBADF) or, once a
    # new socket reuses the number, someone else's replies; clearing its _sock while it
    # reconnects orphans the new socket, one connection over the budget.
    pool = make_pool(redis_server.url, max_connections=MAX, timeout=10, client_name="held")
    client = redis.Redis(connection_pool=pool)
    peak = PeakClients(redis_server, "held")
    workers = Workers(client, start_thread)
    try:
        for _ in range(DISCONNECTS):
            base = workers.ops
            wait_until(lambda: workers.ops > base, timeout=30, what="a command between disconnects")
            pool.disconnect()
    finally:
        workers.join()
        server_peak = peak.close()
    assert workers.wrong == [], workers.wrong[:5]
    ours = [e for e in workers.errors if "Bad file descriptor" in e or "SafePoolError" in e
            or "ServerUnavailableError" in e]
    assert ours == [], ours[:5]
    assert server_peak <= MAX, f"the server saw {server_peak} connections for a budget of {MAX}"
    stats = pool.stats()
    assert stats["in_use"] == 0 and stats["total"] == stats["idle"], stats
    assert stats["created"] - stats["closed"] == stats["total"], stats
    pool.disconnect()
    # nothing orphaned stays open: the server sees every connection go
    wait_until(lambda: b"name=held " not in redis_server.command("CLIENT", "LIST"),
               timeout=10, what="every connection closed")


def test_disconnect_leaves_other_threads_connection_to_its_holder(redis_server, make_pool):
    pool = make_pool(redis_server.url, max_connections=2, timeout=5)
    out, disconnected, back = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def holder() -> None:
        conn = pool.get_connection()
        conn.send_command("PING")
        assert conn.read_response() in (b"PONG", "PONG")
        seen["sock"] = conn._sock
        out.set()
        disconnected.wait(10)
        seen["sock_after"] = conn._sock  # ours to close: disconnect() did not touch it
        try:
            conn.send_command("PING")
            conn.read_response()
        except redis.exceptions.ConnectionError as exc:
            seen["error"] = exc
        pool.release(conn)
        back.set()

    t = threading.Thread(target=holder, daemon=True)
    t.start()
    assert out.wait(10)
    pool.disconnect()
    disconnected.set()
    assert back.wait(10)
    t.join(10)
    assert seen["sock_after"] is seen["sock"]
    # the socket was shut down: the holder's next command failed in redis-py's hierarchy
    assert isinstance(seen["error"], redis.exceptions.ConnectionError), seen
    stats = pool.stats()
    assert stats["in_use"] == 0 and stats["total"] == stats["idle"], stats
    # the release closed it in the holder's thread and did not count it as a failure
    assert stats["state"] == "ready", stats
    assert redis.Redis(connection_pool=pool).ping()


def test_disconnect_of_the_callers_own_checkout_closes_it(redis_server, make_pool):
    pool = make_pool(redis_server.url, max_connections=2, timeout=5)
    conn = pool.get_connection()
    conn.send_command("PING")
    conn.read_response()
    pool.disconnect()
    assert conn._sock is None  # as redis-py: it reconnects on its next command
    conn.send_command("PING")
    assert conn.read_response() in (b"PONG", "PONG")
    pool.release(conn)
    assert pool.stats()["in_use"] == 0
