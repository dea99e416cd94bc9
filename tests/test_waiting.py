"""Waiting for a connection: FIFO order, timeouts and their message, GIL release, close."""

import re
import threading

import pytest
import redis.exceptions

import redis_safepool as sp

# exact slot accounting: the health checker's probes would take slots at random moments
pytestmark = pytest.mark.usefixtures("no_checker")


def waiters(pool) -> int:
    return pool.stats()["waiters"]


def test_fifo_order(server_url, make_pool, wait_until, start_thread):
    pool = make_pool(server_url, max_connections=1, timeout=30)
    held = pool.get_connection()
    served = []
    errors = []

    def waiter(index: int) -> None:
        try:
            conn = pool.get_connection()
            served.append(index)
            pool.release(conn)
        except Exception as exc:
            errors.append(exc)

    threads = []
    for i in range(8):
        threads.append(start_thread(waiter, i))
        wait_until(lambda: waiters(pool) == i + 1, what=f"waiter {i} to queue")
    pool.release(held)
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert served == list(range(8))
    assert pool.stats()["waiters"] == 0
    assert pool.stats()["in_use"] == 0


def test_fifo_across_pools_and_flavors(server_url, make_pool, wait_until, start_thread):
    plain = make_pool(server_url, max_connections=1, timeout=30)
    decoded = make_pool(server_url, max_connections=1, timeout=30, decode_responses=True)
    held = plain.get_connection()
    served = []

    def waiter(index: int, pool) -> None:
        conn = pool.get_connection()
        conn.send_command("PING")
        served.append((index, conn.read_response()))
        pool.release(conn)

    threads = []
    for i in range(6):
        pool = decoded if i % 2 else plain
        threads.append(start_thread(waiter, i, pool))
        wait_until(lambda: waiters(plain) == i + 1, what=f"waiter {i} to queue")
    plain.release(held)
    for t in threads:
        t.join(timeout=30)
    assert [i for i, _ in served] == list(range(6))
    # each waiter got a connection of its own flavor
    assert [reply for _, reply in served] == [b"PONG", "PONG"] * 3


def test_release_hands_over_to_waiter_no_overtaking(server_url, make_pool, wait_until,
                                                    start_thread):
    pool = make_pool(server_url, max_connections=1, timeout=30)
    impatient = make_pool(server_url, max_connections=1, timeout=0)
    held = pool.get_connection()
    got = threading.Event()
    proceed = threading.Event()
    result = {}

    def waiter() -> None:
        conn = pool.get_connection()
        result["conn"] = conn
        got.set()
        proceed.wait(30)
        pool.release(conn)

    t = start_thread(waiter)
    wait_until(lambda: waiters(pool) == 1, what="the waiter to queue")
    pool.release(held)
    # the released connection went straight to the waiter: a latecomer cannot take it,
    # whether or not the waiter thread has woken up yet
    with pytest.raises(sp.PoolTimeoutError):
        impatient.get_connection()
    assert got.wait(30)
    proceed.set()
    t.join(30)
    assert result["conn"] is held  # same flavor: the connection itself was handed over
    conn = impatient.get_connection()
    impatient.release(conn)


def test_timeout_error_message(redis_server, make_pool):
    pool = make_pool(redis_server.url, max_connections=2, timeout=0.2)
    held = [pool.get_connection(), pool.get_connection()]
    with pytest.raises(sp.PoolTimeoutError) as info:
        pool.get_connection()
    exc = info.value
    assert isinstance(exc, redis.exceptions.MaxConnectionsError)
    assert isinstance(exc, redis.exceptions.ConnectionError)
    assert isinstance(exc, sp.SafePoolError)
    text = str(exc)
    assert f"127.0.0.1:{redis_server.port}" in text
    assert "max_connections=2" in text
    assert "in use=2" in text
    waited = re.search(r"after (\d+(?:\.\d+)?)\s*s", text)
    assert waited, text
    assert float(waited.group(1)) >= 0.19  # it cannot have given up before its timeout
    st = pool.stats()
    assert st["timeouts"] == 1
    assert st["waits"] >= 1
    assert st["waiters"] == 0
    assert st["in_use"] == 2
    for c in held:
        pool.release(c)


def test_timeout_through_redis_client(server_url, make_pool):
    pool = make_pool(server_url, max_connections=1, timeout=0.05)
    held = pool.get_connection()
    r = redis.Redis(connection_pool=pool)
    with pytest.raises(redis.exceptions.MaxConnectionsError):
        r.get("x")
    pool.release(held)
    assert r.get("x") is None


def test_timeout_zero_never_waits(server_url, make_pool, wait_until, start_thread):
    pool = make_pool(server_url, max_connections=1, timeout=30)
    never = make_pool(server_url, max_connections=1, timeout=0)
    # with room, timeout=0 succeeds
    conn = never.get_connection()
    never.release(conn)
    held = pool.get_connection()
    seen_waiting = []
    done = threading.Event()

    def watcher() -> None:
        while not done.is_set():
            seen_waiting.append(waiters(pool))

    t = start_thread(watcher)
    failures = 0
    for _ in range(200):
        with pytest.raises(sp.PoolTimeoutError):
            never.get_connection()
        failures += 1
    done.set()
    t.join(10)
    assert failures == 200
    assert seen_waiting and max(seen_waiting) == 0  # nobody ever joined the queue

    # a timeout=0 attempt does not disturb a real waiter
    result = []
    w = start_thread(lambda: result.append(pool.get_connection()))
    wait_until(lambda: waiters(pool) == 1, what="the waiter to queue")
    with pytest.raises(sp.PoolTimeoutError):
        never.get_connection()
    assert waiters(pool) == 1
    pool.release(held)
    w.join(30)
    assert len(result) == 1
    pool.release(result[0])


def test_timeout_none_waits_until_release(server_url, make_pool, wait_until, start_thread):
    pool = make_pool(server_url, max_connections=1, timeout=None)
    assert pool.timeout is None
    held = pool.get_connection()
    result = []
    t = start_thread(lambda: result.append(pool.get_connection()))
    wait_until(lambda: waiters(pool) == 1, what="the waiter to queue")
    assert result == []
    pool.release(held)
    t.join(30)
    assert len(result) == 1
    st = pool.stats()
    assert st["waits"] >= 1
    assert st["wait_time_total"] > 0
    assert st["wait_time_max"] > 0
    pool.release(result[0])


def test_gil_released_while_main_thread_waits(server_url, make_pool, wait_until,
                                              start_thread):
    # If the wait held the GIL, the helper below could not run until the main thread
    # timed out (30 s), it would then see no waiter, and the test would fail.
    pool = make_pool(server_url, max_connections=1, timeout=30)
    held = pool.get_connection()
    report = {}

    def helper() -> None:
        wait_until(lambda: waiters(pool) == 1, what="the main thread to queue")
        progress = 0
        while progress < 100_000:
            progress += 1
        report["progress"] = progress
        report["still_waiting"] = waiters(pool)
        pool.release(held)

    t = start_thread(helper)
    conn = pool.get_connection()  # blocks the main thread until the helper releases
    t.join(30)
    assert report["progress"] > 0
    assert report["still_waiting"] == 1
    assert conn is held
    pool.release(conn)


def test_gil_released_while_other_thread_waits(server_url, make_pool, wait_until,
                                               start_thread):
    pool = make_pool(server_url, max_connections=1, timeout=30)
    held = pool.get_connection()
    result = []
    t = start_thread(lambda: result.append(pool.get_connection()))
    wait_until(lambda: waiters(pool) == 1, what="the thread to queue")
    progress = 0
    while progress < 100_000:  # the main thread runs Python while the other one waits
        progress += 1
    assert waiters(pool) == 1 and result == []
    pool.release(held)
    t.join(30)
    assert result == [held]
    pool.release(held)


def test_close_wakes_waiters(server_url, make_pool, wait_until, start_thread):
    pool = make_pool(server_url, max_connections=1, timeout=None)
    held = pool.get_connection()
    outcomes = []

    def waiter() -> None:
        try:
            outcomes.append(pool.get_connection())
        except Exception as exc:
            outcomes.append(exc)

    threads = [start_thread(waiter) for _ in range(5)]
    wait_until(lambda: waiters(pool) == 5, what="5 waiters to queue")
    pool.close()
    for t in threads:
        t.join(10)  # promptly: a waiter with timeout=None would otherwise never return
    assert not any(t.is_alive() for t in threads)
    assert len(outcomes) == 5
    for exc in outcomes:
        assert isinstance(exc, sp.PoolClosedError), exc
        assert isinstance(exc, redis.exceptions.ConnectionError)
    with pytest.raises(sp.PoolClosedError):
        pool.get_connection()
    pool.release(held)  # release after close is a documented no-op (closes the connection)
    assert pool.stats()["in_use"] == 0
    assert pool.stats()["waiters"] == 0


def test_close_of_one_pool_leaves_other_pools_waiting(redis_server, make_pool, wait_until,
                                                      start_thread):
    a = make_pool(redis_server.url, max_connections=1, timeout=30)
    b = make_pool(redis_server.url, max_connections=1, timeout=30)
    held = a.get_connection()
    result = []
    t = start_thread(lambda: result.append(b.get_connection()))
    wait_until(lambda: waiters(b) == 1, what="b's waiter to queue")
    a.close()
    assert waiters(b) == 1  # b's waiter is not disturbed by a's close
    a.release(held)  # the slot comes back to the endpoint and goes to b's waiter
    t.join(30)
    assert len(result) == 1 and not isinstance(result[0], Exception)
    result[0].send_command("PING")
    assert result[0].read_response() == b"PONG"
    b.release(result[0])
    assert b.stats()["in_use"] == 0
