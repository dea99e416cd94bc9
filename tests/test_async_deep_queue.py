"""asyncio waiters at deep queues: one loop timer per line of waiters, deadlines kept in order, nothing piling up."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable, Dict, List

import pytest

import redis_safepool as sp

from aio import RUN_LIMIT, run, until


async def until_slow(predicate: Callable[[], object], what: str) -> object:
    """until() with the time thousands of tasks need on a loaded machine."""
    return await until(predicate, what, timeout=30.0)


def pending_timers(loop: asyncio.AbstractEventLoop) -> int:
    """Timers in the loop's heap that will still run (CPython's default loop)."""
    return sum(1 for handle in loop._scheduled if not handle.cancelled())  # type: ignore[attr-defined]


@pytest.fixture
def make_apool():
    pools: List[sp.asyncio.SafeConnectionPool] = []

    def factory(url: str, **kwargs: object):
        from redis_safepool.asyncio import SafeConnectionPool
        pool = SafeConnectionPool.from_url(url, **kwargs)
        pools.append(pool)
        return pool

    yield factory
    for pool in pools:
        try:
            pool._close_core()
        except Exception:
            pass


def test_thousands_of_waiters_keep_one_timer_and_go_in_order(redis_server, make_apool, no_checker):
    tasks_n = 3000
    pool = make_apool(redis_server.url, max_connections=1, timeout=60)
    served: List[int] = []

    async def main():
        loop = asyncio.get_running_loop()
        held = await pool.get_connection()
        before = pending_timers(loop)

        async def waiter(i: int) -> None:
            conn = await pool.get_connection()
            served.append(i)
            await pool.release(conn)

        tasks = []
        for i in range(tasks_n):
            tasks.append(asyncio.ensure_future(waiter(i)))
            if i % 500 == 0:
                await asyncio.sleep(0)  # each task starts, in creation order
        await until_slow(lambda: pool.stats()["waiters"] == tasks_n, "every task to queue")
        # One deadline timer for the whole line (a timer per waiter would be 3000).
        assert pending_timers(loop) - before <= 2, pending_timers(loop)
        await pool.release(held)
        await asyncio.gather(*tasks)
        st = pool.stats()
        assert (st["in_use"], st["waiters"], st["timeouts"]) == (0, 0, 0), st
        assert sum(len(line) for line in pool._deadline_lines.values()) <= 1
        await pool.aclose()

    run(main())
    assert served == list(range(tasks_n))


def test_waiters_time_out_in_the_order_they_joined(redis_server, make_apool, no_checker):
    timeout = 0.3
    pool = make_apool(redis_server.url, max_connections=1, timeout=timeout)
    failed: List[str] = []
    waited: Dict[str, float] = {}

    async def main():
        loop = asyncio.get_running_loop()
        held = await pool.get_connection()

        async def waiter(name: str) -> None:
            started = loop.time()
            with pytest.raises(sp.PoolTimeoutError):
                await pool.get_connection()
            waited[name] = loop.time() - started
            failed.append(name)

        cancelled_one = None
        tasks = []
        for n, name in enumerate("abcde"):
            task = asyncio.ensure_future(waiter(name))
            tasks.append(task)
            # joined: still queued, or timed out already (a slow machine may take longer
            # than the timeout between two joins)
            await until_slow(lambda: pool.stats()["waiters"] + len(failed)
                        == n + 1 - (cancelled_one is not None), f"{name} to queue")
            if name == "b":
                cancelled_one = task  # leaves the line in its middle
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            # the next one joins later: a later deadline
            start = loop.time()
            await until_slow(lambda: loop.time() - start >= 0.02, "the clock to move on")
        await asyncio.gather(*(t for t in tasks if t is not cancelled_one))
        st = pool.stats()
        assert (st["waiters"], st["timeouts"], st["in_use"]) == (0, 4, 1), st
        await pool.release(held)
        await pool.aclose()

    run(main())
    assert failed == ["a", "c", "d", "e"]
    # The loop runs a timer up to its clock resolution early, never much later than due.
    assert all(timeout - 0.01 <= w < timeout + 5.0 for w in waited.values()), waited


def test_a_served_head_does_not_take_the_next_deadline(redis_server, make_apool, no_checker):
    """The line's timer was set for the first waiter; it is served, the second times out."""
    pool = make_apool(redis_server.url, max_connections=1, timeout=0.4)

    async def main():
        loop = asyncio.get_running_loop()
        held = await pool.get_connection()
        first = asyncio.ensure_future(pool.get_connection())
        await until_slow(lambda: pool.stats()["waiters"] == 1, "the first waiter to queue")
        start = loop.time()
        await until_slow(lambda: loop.time() - start >= 0.1, "the clock to move on")
        second_started = loop.time()
        second = asyncio.ensure_future(pool.get_connection())
        await until_slow(lambda: pool.stats()["waiters"] == 2, "the second waiter to queue")
        await pool.release(held)
        conn = await first
        with pytest.raises(sp.PoolTimeoutError):
            await second
        assert loop.time() - second_started >= 0.4 - 0.01
        # and the first one, served, never fails later on
        start = loop.time()
        await until_slow(lambda: loop.time() - start >= 0.5, "the first deadline to pass")
        assert not first.cancelled() and first.exception() is None
        await pool.release(conn)
        st = pool.stats()
        assert (st["waiters"], st["timeouts"], st["in_use"]) == (0, 1, 0), st
        await pool.aclose()

    run(main())


def test_a_shorter_timeout_set_while_others_wait_is_kept(redis_server, make_apool, no_checker):
    pool = make_apool(redis_server.url, max_connections=1, timeout=30)

    async def main():
        loop = asyncio.get_running_loop()
        held = await pool.get_connection()
        patient = asyncio.ensure_future(pool.get_connection())
        await until_slow(lambda: pool.stats()["waiters"] == 1, "the patient waiter to queue")
        pool.timeout = 0.2
        started = loop.time()
        with pytest.raises(sp.PoolTimeoutError):
            await pool.get_connection()  # behind a waiter with a later deadline
        assert loop.time() - started < 20
        assert not patient.done()
        await pool.release(held)
        await pool.release(await patient)
        await pool.aclose()

    run(main())


def test_two_loops_time_out_their_own_waiters(redis_server, make_apool, no_checker):
    pool = make_apool(redis_server.url, max_connections=1, timeout=0.3)
    outcome: Dict[str, object] = {}
    queued = threading.Event()
    other_done = threading.Event()

    async def holder():
        held = await pool.get_connection()
        queued.set()
        with pytest.raises(sp.PoolTimeoutError):
            await pool.get_connection()
        outcome["holder"] = "timed out"
        await until_slow(other_done.is_set, "the other loop's waiter to settle")
        await pool.release(held)

    async def other():
        with pytest.raises(sp.PoolTimeoutError):
            await pool.get_connection()
        outcome["other"] = "timed out"

    def in_thread():
        if not queued.wait(30):
            outcome["other"] = "never started"
            return
        try:
            run(other())
        except BaseException as exc:  # reported by the assertion below
            outcome["other"] = exc
        finally:
            other_done.set()

    thread = threading.Thread(target=in_thread, daemon=True)
    thread.start()
    run(holder())
    thread.join(RUN_LIMIT)
    assert outcome == {"holder": "timed out", "other": "timed out"}, outcome
    st = pool.stats()
    assert (st["waiters"], st["timeouts"], st["in_use"]) == (0, 2, 0), st


def test_a_failing_expiry_does_not_strand_the_waiters_behind_it(redis_server, make_apool,
                                                                 no_checker):
    pool = make_apool(redis_server.url, max_connections=1, timeout=0.2)
    real_error = pool._timeout_error
    calls: List[float] = []

    def error_once(waited: float):
        calls.append(waited)
        if len(calls) == 1:
            raise RuntimeError("building the first error failed")
        return real_error(waited)

    pool._timeout_error = error_once
    errors: List[BaseException] = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context.get("exception")))
        held = await pool.get_connection()
        first = asyncio.ensure_future(pool.get_connection())
        await until_slow(lambda: pool.stats()["waiters"] == 1, "the first waiter to queue")
        second = asyncio.ensure_future(pool.get_connection())
        await until_slow(lambda: pool.stats()["waiters"] == 2, "the second waiter to queue")
        with pytest.raises(sp.PoolTimeoutError):
            await asyncio.wait_for(second, 30)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await pool.release(held)
        await pool.aclose()

    run(main())
    assert len(calls) == 2 and any(isinstance(e, RuntimeError) for e in errors), (calls, errors)
