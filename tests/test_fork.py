"""Fork safety: children get fresh connections and budgets, the parent's keep working."""

import multiprocessing
import os
import signal
import threading
import time
import traceback
import warnings

import pytest
import redis

import redis_safepool as sp

CHILD_DEADLINE = 30  # seconds a forked child may live before it is killed (and the test fails)


def run_in_child(body) -> str:
    """Fork; run ``body()`` in the child; return what it reported (``"ok"`` on success)."""
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # child: never return into pytest
        os.close(read_fd)
        code = 1
        try:
            signal.alarm(CHILD_DEADLINE)
            result = body()
            message = "ok" if result is None else str(result)
            code = 0
        except BaseException:
            message = traceback.format_exc()
        try:
            os.write(write_fd, message.encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    while True:
        chunk = os.read(read_fd, 65536)  # EOF when the child exits (alarm bounds it)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    deadline = time.monotonic() + CHILD_DEADLINE
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("forked child did not exit")
        time.sleep(0.01)
    message = b"".join(chunks).decode(errors="replace")
    if os.WIFSIGNALED(status):
        pytest.fail(f"forked child died of signal {os.WTERMSIG(status)}: {message}")
    return message


def ping(conn) -> bytes:
    conn.send_command("PING")
    return conn.read_response()


@pytest.mark.usefixtures("no_checker")  # exact client counts on the server
def test_child_gets_fresh_connections(redis_server, make_pool, wait_until):
    pool = make_pool(redis_server.url, max_connections=2, timeout=5)
    r = redis.Redis(connection_pool=pool)
    r.set("k", "parent")
    parent_conn = pool.get_connection()
    pool.release(parent_conn)
    assert redis_server.connected_clients() == 1

    def child():
        conn = pool.get_connection()
        assert conn is not parent_conn
        assert ping(conn) == b"PONG"
        assert redis_server.connected_clients() == 2  # a new connection of its own
        pool.release(conn)
        assert r.get("k") == b"parent"
        r.set("k", "child")
        st = pool.stats()
        assert st["in_use"] == 0 and st["idle"] == 1, st  # only its own connection

    assert run_in_child(child) == "ok"
    # the parent's connection is untouched (the child did not shut its socket down)
    conn = pool.get_connection()
    assert conn is parent_conn
    assert ping(conn) == b"PONG"
    pool.release(conn)
    assert r.get("k") == b"child"
    wait_until(lambda: redis_server.connected_clients() == 1, what="the child's connection to go")
    assert pool.stats()["created"] == 1


def test_child_budget_starts_empty(redis_server, make_pool):
    pool = make_pool(redis_server.url, max_connections=1, timeout=5)
    held = pool.get_connection()
    assert ping(held) == b"PONG"

    def child():
        conn = pool.get_connection()  # the parent's in-use slot does not count here
        assert conn is not held
        assert ping(conn) == b"PONG"
        impatient = sp.SafeConnectionPool.from_url(redis_server.url, max_connections=1,
                                                   timeout=0)
        with pytest.raises(sp.PoolTimeoutError):
            impatient.get_connection()  # the child's budget of 1 is used by conn
        pool.release(held)  # inherited, checked out before the fork: dropped silently
        st = pool.stats()
        assert st["in_use"] == 1 and st["waiters"] == 0, st
        pool.release(conn)
        assert pool.stats()["in_use"] == 0

    assert run_in_child(child) == "ok"
    assert ping(held) == b"PONG"  # still the parent's, still connected
    assert pool.stats()["in_use"] == 1
    pool.release(held)
    assert pool.stats()["in_use"] == 0


def test_fork_while_a_thread_waits(redis_server, make_pool, wait_until, start_thread):
    pool = make_pool(redis_server.url, max_connections=1, timeout=30)
    held = pool.get_connection()
    result = []
    t = start_thread(lambda: result.append(pool.get_connection()))
    wait_until(lambda: pool.stats()["waiters"] == 1, what="the thread to queue")

    def child():
        st = pool.stats()
        assert st["waiters"] == 0 and st["in_use"] == 0, st  # the queue did not survive
        conn = pool.get_connection()
        assert ping(conn) == b"PONG"
        pool.release(conn)

    assert run_in_child(child) == "ok"
    assert pool.stats()["waiters"] == 1  # the parent's waiter is still queued
    pool.release(held)
    t.join(30)
    assert result == [held]
    pool.release(held)


def test_fork_under_load_does_not_deadlock(redis_server, make_pool, start_thread):
    pool = make_pool(redis_server.url, max_connections=2, timeout=30)
    r = redis.Redis(connection_pool=pool)
    stop = threading.Event()
    errors = []

    def hammer() -> None:
        try:
            for _ in range(100_000):
                if stop.is_set():
                    return
                r.incr("hammer")
        except Exception as exc:
            errors.append(exc)

    threads = [start_thread(hammer) for _ in range(4)]

    def child():
        local = redis.Redis(connection_pool=pool)
        for _ in range(20):
            local.incr("children")
        st = pool.stats()
        assert st["in_use"] == 0 and 1 <= st["idle"] <= 2, st

    try:
        for _ in range(10):
            assert run_in_child(child) == "ok"
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == []
    assert int(r.get("children")) == 200
    assert redis_server.connected_clients() <= 2


# multiprocessing targets must be module level (spawn imports this module by name)

def _incr_with_inherited(pool, n):
    r = redis.Redis(connection_pool=pool)
    for _ in range(n):
        r.incr("mp")
    st = pool.stats()
    return st["idle"] + st["in_use"]  # connections this process holds


def _incr_with_new_pool(url, n):
    pool = sp.SafeConnectionPool.from_url(url, max_connections=2, timeout=30)
    try:
        r = redis.Redis(connection_pool=pool)
        for _ in range(n):
            r.incr("mp")
        st = pool.stats()
        return st["idle"] + st["in_use"], st["max_connections"]
    finally:
        pool.close()


_INHERITED = {}  # what forked multiprocessing workers inherit (a pool does not pickle)


def _incr_with_pool_from_parent(n):
    return _incr_with_inherited(_INHERITED["pool"], n)


def _process_target(pool, n, queue):
    queue.put(_incr_with_inherited(pool, n))


def test_multiprocessing_fork_process(redis_server, make_pool):
    pool = make_pool(redis_server.url, max_connections=2, timeout=30)
    r = redis.Redis(connection_pool=pool)
    r.set("mp", 0)  # the parent has a connection before forking
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_process_target, args=(pool, 50, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    created = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert created == [1, 1, 1]  # each child holds one connection of its own
    assert int(r.get("mp")) == 150
    assert pool.stats()["created"] == 1


def test_multiprocessing_fork_pool(redis_server, make_pool):
    pool = make_pool(redis_server.url, max_connections=2, timeout=30)
    redis.Redis(connection_pool=pool).set("mp", 0)
    ctx = multiprocessing.get_context("fork")
    _INHERITED["pool"] = pool
    try:
        with ctx.Pool(3) as workers:
            created = workers.map_async(_incr_with_pool_from_parent, [20] * 6).get(60)
    finally:
        _INHERITED.clear()
    assert created == [1] * 6  # a worker process reuses its one connection
    assert int(redis.Redis(connection_pool=pool).get("mp")) == 120


def test_multiprocessing_spawn(redis_server, make_pool):
    pool = make_pool(redis_server.url, max_connections=2, timeout=30)
    redis.Redis(connection_pool=pool).set("mp", 0)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as workers:
        results = workers.starmap_async(_incr_with_new_pool,
                                        [(redis_server.url, 25)] * 4).get(120)
    assert all(created == 1 and limit == 2 for created, limit in results)
    assert int(redis.Redis(connection_pool=pool).get("mp")) == 100
