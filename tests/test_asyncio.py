"""redis_safepool.asyncio.SafeConnectionPool on real redis-servers: drop-in use, shared budget, fair non-blocking waits, cancellation."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from typing import List

import pytest
import redis
import redis.asyncio as ra
import redis.exceptions
from redis._parsers import _AsyncRESP2Parser
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

import redis_safepool as sp
import redis_safepool.asyncio as spa
from redis_safepool.asyncio import BlockingSafeConnectionPool, SafeConnectionPool

from aio import run, until



def live_clients(server) -> int:
    """Clients the server holds that we have not closed (see RedisServer.live_clients)."""
    return server.live_clients()


@pytest.fixture
def make_apool():
    """Create asyncio SafeConnectionPools (``make_apool(url, **kw)``); their budgets are
    released after the test even if it failed before ``aclose()``."""
    pools: List[SafeConnectionPool] = []

    def factory(url: str, **kwargs: object) -> SafeConnectionPool:
        pool = SafeConnectionPool.from_url(url, **kwargs)
        pools.append(pool)
        return pool

    yield factory
    for pool in pools:
        try:
            pool._close_core()  # no loop here: the C side only (aclose() needs the pool's loop)
        except Exception:
            pass
    pools.clear()
    gc.collect()


# -- drop-in use ----------------------------------------------------------------------


def test_drop_in_for_redis_asyncio(redis_server, make_apool):
    pool = make_apool(redis_server.url, max_connections=4, timeout=5)
    assert isinstance(pool, ra.ConnectionPool)
    assert BlockingSafeConnectionPool is SafeConnectionPool
    assert pool.max_connections == 4 and pool.timeout == 5
    st = pool.stats()
    assert st["endpoint"] == redis_server.url and st["max_connections"] == 4

    async def main():
        async with ra.Redis(connection_pool=pool) as r:
            assert await r.ping() is True
            assert pool.can_get_connection()
        assert pool.stats()["in_use"] == 0
        await pool.aclose()

    run(main())


def test_strings(redis_server, make_apool):
    pool = make_apool(redis_server.url, max_connections=2, timeout=5)

    async def main():
        r = ra.Redis(connection_pool=pool)
        assert await r.set("s", "v") is True
        assert await r.get("s") == b"v"
        assert await r.incrby("n", 5) == 5
        assert await r.append("s", "w") == 2
        assert await r.mget("s", "n", "missing") == [b"vw", b"5", None]
        assert await r.delete("s", "n") == 2
        # 50 concurrent commands share the two connections
        assert sorted(await asyncio.gather(*(r.incr("c") for _ in range(50)))) == list(range(1, 51))
        st = pool.stats()
        assert st["in_use"] == 0 and 1 <= st["total"] <= 2
        await r.aclose()
        await pool.aclose()

    run(main())
    assert redis_server.connected_clients() <= 2


def test_pipelines(redis_server, make_apool):
    pool = make_apool(redis_server.url, max_connections=2, timeout=5)

    async def main():
        r = ra.Redis(connection_pool=pool)
        async with r.pipeline(transaction=True) as p:
            p.set("a", 1).incr("a").get("a")
            assert await p.execute() == [True, 2, b"2"]
        async with r.pipeline(transaction=False) as p:
            for i in range(100):
                p.rpush("l", i)
            results = await p.execute()
        assert results == list(range(1, 101))
        async with r.pipeline() as p:  # WATCH / MULTI holds one connection throughout
            await p.watch("a")
            assert pool.stats()["in_use"] == 1
            value = int(await p.get("a"))
            p.multi()
            p.set("a", value + 1)
            assert await p.execute() == [True]
        assert await r.get("a") == b"3"
        assert pool.stats()["in_use"] == 0
        await pool.aclose()

    run(main())


def test_pubsub(redis_server, make_apool):
    pool = make_apool(redis_server.url, max_connections=2, timeout=5)

    async def main():
        r = ra.Redis(connection_pool=pool)
        ps = r.pubsub()
        await ps.subscribe("ch")
        assert pool.stats()["in_use"] == 1  # the subscriber holds its connection
        await until(lambda: redis_server.info("clients").get("pubsub_clients", "1") != "0"
                    and redis_server.command("PUBSUB", "NUMSUB", "ch").endswith(b":1\r\n"),
                    "the subscription on the server")
        assert await r.publish("ch", "hello") == 1
        messages = []
        for _ in range(200):  # bounded; each read waits at most 0.1 s
            msg = await ps.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if msg is not None:
                messages.append(msg)
                break
        assert messages and messages[0]["channel"] == b"ch" and messages[0]["data"] == b"hello"
        await ps.aclose()
        assert pool.stats()["in_use"] == 0
        await pool.aclose()

    run(main())


# -- one budget for everything ----------------------------------------------------------


def test_sync_and_async_pools_share_the_budget(redis_server, make_pool, make_apool, start_thread,
                                               wait_until):
    sync_pool = make_pool(redis_server.url, max_connections=2, timeout=30)
    apool = make_apool(redis_server.url, max_connections=2, timeout=30)
    quick = make_apool(redis_server.url, max_connections=2, timeout=0)
    assert apool.stats()["pools"] == 3
    held = [sync_pool.get_connection(), sync_pool.get_connection()]

    async def main():
        with pytest.raises(sp.PoolTimeoutError):
            await quick.get_connection()  # the threads' connections count for the coroutines
        task = asyncio.ensure_future(apool.get_connection())
        await until(lambda: apool.stats()["waiters"] == 1, "the task to queue")
        # a release in another thread serves the coroutine and wakes its loop
        start_thread(sync_pool.release, held.pop())
        conn = await task
        assert apool.stats()["in_use"] == 2
        # and the other way round: a thread waits, a coroutine releases
        got = []
        thread = start_thread(lambda: got.append(sync_pool.get_connection()))
        await until(lambda: apool.stats()["waiters"] == 1, "the thread to queue")
        await apool.release(conn)
        await until(lambda: got, "the thread to be served")
        thread.join(10)
        held.extend(got)
        await apool.aclose()
        await quick.aclose()

    run(main())
    for conn in held:
        sync_pool.release(conn)
    assert sync_pool.stats()["in_use"] == 0
    wait_until(lambda: live_clients(redis_server) <= 2, what="at most two clients")


@pytest.mark.filterwarnings("ignore::redis_safepool.observe.PoolPerRequestWarning")  # 100 pools on purpose
def test_global_bound_coroutines_pools_and_threads(redis_server, make_pool, make_apool,
                                                   start_thread):
    """1,000 coroutines over 100 asyncio pools plus 20 threads over sync pools, one endpoint
    with max_connections=8: the server never sees more than 8 connections."""
    limit, n_tasks, n_apools, n_threads, per_task = 8, 1000, 100, 20, 4
    apools = [make_apool(redis_server.url, max_connections=limit, timeout=60)
              for _ in range(n_apools)]
    sync_pools = [make_pool(redis_server.url, max_connections=limit, timeout=60)
                  for _ in range(n_threads)]
    label = apools[0].endpoint
    samples: List[tuple] = []
    errors: List[BaseException] = []
    thread_rounds: List[int] = []
    async_done = threading.Event()
    stop = threading.Event()

    def thread_worker(index: int) -> None:
        client = redis.Redis(connection_pool=sync_pools[index])
        rounds = 0
        try:
            for i in range(3000):  # bounded; keeps going until the coroutines are done
                if async_done.is_set() and i >= 20:
                    break
                client.incr("counter")
                if i % 7 == 0:
                    with client.pipeline(transaction=True) as pipe:
                        pipe.incr("pipelined").get("pipelined").execute()
                rounds += 1
        except Exception as exc:  # reported by the main thread
            errors.append(exc)
        thread_rounds.append(rounds)

    def sampler() -> None:
        for _ in range(200_000):
            if stop.is_set():
                break
            closed_before = sp.stats()[label]["closed"]
            live = redis_server.listed_clients()  # cheap: the closes around it are allowed for
            st = sp.stats()[label]
            samples.append((live, st["total"], closed_before, st["closed"]))

    async def coroutine_worker(index: int) -> None:
        r = ra.Redis(connection_pool=apools[index % n_apools])
        for i in range(per_task):
            await r.incr("counter")
            if i == 0 and index % 5 == 0:
                async with r.pipeline(transaction=True) as pipe:
                    await pipe.incr("pipelined").get("pipelined").execute()

    async def main():
        try:
            results = await asyncio.gather(*(coroutine_worker(i) for i in range(n_tasks)),
                                           return_exceptions=True)
        finally:
            async_done.set()
        errors.extend(r for r in results if isinstance(r, BaseException))
        await asyncio.gather(*(p.aclose() for p in apools))

    sampling = start_thread(sampler)
    threads = [start_thread(thread_worker, i) for i in range(n_threads)]
    try:
        run(main())
    finally:
        async_done.set()
        for t in threads:
            t.join(120)
        stop.set()
        sampling.join(30)
    assert not any(t.is_alive() for t in threads), "threads did not finish"
    assert errors == [], errors[:3]
    assert len(samples) >= 10, "the sampler hardly ran"
    expected = n_tasks * per_task + sum(thread_rounds)
    assert int(redis.Redis(connection_pool=sync_pools[0]).get("counter")) == expected
    # Our books (idle + in use + connecting + closing) never exceed the budget.
    assert max(s[1] for s in samples) <= limit, max(samples, key=lambda s: s[1])
    assert max(s[0] for s in samples) >= 1
    # The server's count: sync and asyncio connections are of different flavors, so they
    # are closed and replaced all the time. The server still lists a client whose close it
    # has not read yet (it may accept the replacement first), so a sample may exceed the
    # budget by at most the closes our side made around it (since the previous sample).
    for prev, cur in zip(samples, samples[1:]):
        in_flight = cur[3] - prev[2]
        assert cur[0] <= limit + in_flight, (cur, prev)
    st = sp.stats()[label]
    assert st["in_use"] == 0 and st["waiters"] == 0
    assert st["created"] - st["closed"] <= limit
    assert live_clients(redis_server) <= limit


# -- waiting -------------------------------------------------------------------------------


def test_waiting_never_blocks_the_loop(redis_server, make_apool, no_checker):
    pool = make_apool(redis_server.url, max_connections=1, timeout=None)
    n_waiters = 50

    async def main():
        ticks = [0]
        stop = asyncio.Event()

        async def ticker():
            for _ in range(10_000_000):
                if stop.is_set():
                    break
                ticks[0] += 1
                await asyncio.sleep(0)

        async def waiter(i: int) -> int:
            conn = await pool.get_connection()
            await pool.release(conn)
            return i

        held = await pool.get_connection()
        tick_task = asyncio.ensure_future(ticker())
        tasks = [asyncio.ensure_future(waiter(i)) for i in range(n_waiters)]
        await until(lambda: pool.stats()["waiters"] == n_waiters, "all waiters to queue")
        at_queue = ticks[0]
        # all 50 are parked on the loop; the ticker keeps running meanwhile
        await until(lambda: ticks[0] >= at_queue + 100, "the ticker to make progress")
        progress = ticks[0] - at_queue
        assert pool.stats()["waiters"] == n_waiters and not any(t.done() for t in tasks)
        await pool.release(held)
        assert sorted(await asyncio.gather(*tasks)) == list(range(n_waiters))
        stop.set()
        await tick_task
        assert progress > 0
        st = pool.stats()
        assert st["in_use"] == 0 and st["waiters"] == 0 and st["total"] == 1
        await pool.aclose()

    run(main())


def test_fifo_across_tasks(redis_server, make_apool):
    pools = [make_apool(redis_server.url, max_connections=1, timeout=30) for _ in range(3)]
    order = [4, 0, 7, 2, 9, 1, 5, 3, 8, 6]
    served: List[int] = []

    async def main():
        held = await pools[0].get_connection()

        async def waiter(i: int) -> None:
            pool = pools[i % len(pools)]
            conn = await pool.get_connection()
            served.append(i)
            await asyncio.sleep(0)  # let the others run: they must still wait their turn
            await pool.release(conn)

        tasks = []
        for n, i in enumerate(order):
            tasks.append(asyncio.ensure_future(waiter(i)))
            await until(lambda: pools[0].stats()["waiters"] == n + 1, f"waiter {i} to queue")
        await pools[0].release(held)
        await asyncio.gather(*tasks)
        for pool in pools:
            await pool.aclose()

    run(main())
    assert served == order


def test_fifo_between_tasks_and_threads(redis_server, make_pool, make_apool, start_thread):
    apool = make_apool(redis_server.url, max_connections=1, timeout=30)
    sync_pool = make_pool(redis_server.url, max_connections=1, timeout=30)
    served: List[str] = []
    lock = threading.Lock()

    def thread_waiter(name: str) -> None:
        conn = sync_pool.get_connection()
        with lock:
            served.append(name)
        sync_pool.release(conn)

    async def main():
        held = await apool.get_connection()

        async def task_waiter(name: str) -> None:
            conn = await apool.get_connection()
            with lock:
                served.append(name)
            await apool.release(conn)

        expected, tasks, threads = [], [], []
        for n in range(8):
            name = f"task{n}" if n % 2 == 0 else f"thread{n}"
            if n % 2 == 0:
                tasks.append(asyncio.ensure_future(task_waiter(name)))
            else:
                threads.append(start_thread(thread_waiter, name))
            expected.append(name)
            await until(lambda: apool.stats()["waiters"] == n + 1, f"{name} to queue")
        await apool.release(held)
        await asyncio.gather(*tasks)
        for t in threads:
            t.join(30)
        await apool.aclose()
        return expected

    expected = run(main())
    assert served == expected
    assert sync_pool.stats()["in_use"] == 0


def test_timeout_names_the_endpoint(redis_server, make_apool, no_checker):
    pool = make_apool(redis_server.url, max_connections=1, timeout=0.2)

    async def main():
        held = await pool.get_connection()
        with pytest.raises(sp.PoolTimeoutError) as info:
            await pool.get_connection()
        assert isinstance(info.value, redis.exceptions.MaxConnectionsError)
        assert isinstance(info.value, redis.exceptions.ConnectionError)
        message = str(info.value)
        assert redis_server.url in message and "max_connections=1" in message, message
        with pytest.raises(redis.exceptions.MaxConnectionsError):  # through the client too
            await ra.Redis(connection_pool=pool).get("k")
        st = pool.stats()
        assert st["timeouts"] == 2 and st["waiters"] == 0 and st["in_use"] == 1
        await pool.release(held)
        assert await ra.Redis(connection_pool=pool).ping() is True
        await pool.aclose()

    run(main())


def test_timeout_zero_never_waits(redis_server, make_apool, no_checker):
    pool = make_apool(redis_server.url, max_connections=1, timeout=0)

    async def main():
        held = await pool.get_connection()
        for _ in range(3):
            with pytest.raises(sp.PoolTimeoutError):
                await pool.get_connection()
        assert pool.stats()["waiters"] == 0
        await pool.release(held)
        conn = await pool.get_connection()
        assert conn is held
        await pool.release(conn)
        await pool.aclose()

    run(main())


# -- cancellation ------------------------------------------------------------------------------


def test_cancelled_waiter_loses_its_place_without_leaking(redis_server, make_apool, no_checker):
    pool = make_apool(redis_server.url, max_connections=1, timeout=30)
    served: List[str] = []

    async def main():
        held = await pool.get_connection()

        async def waiter(name: str) -> None:
            conn = await pool.get_connection()
            served.append(name)
            await pool.release(conn)

        tasks = {}
        for n, name in enumerate("abc"):
            tasks[name] = asyncio.ensure_future(waiter(name))
            await until(lambda: pool.stats()["waiters"] == n + 1, f"{name} to queue")
        tasks["b"].cancel()
        with pytest.raises(asyncio.CancelledError):
            await tasks["b"]
        assert pool.stats()["waiters"] == 2
        await pool.release(held)
        await asyncio.gather(tasks["a"], tasks["c"])
        st = pool.stats()
        assert (st["in_use"], st["waiters"], st["total"]) == (0, 0, 1), st
        for _ in range(3):  # nothing leaked: the single slot still goes round
            assert await ra.Redis(connection_pool=pool).incr("n") > 0
        await pool.aclose()

    run(main())
    assert served == ["a", "c"]


async def hand_over(pool: SafeConnectionPool):
    """Check out the pool's one connection, queue a waiter task for it, release it
    (handed to the waiter in C): (the connection, the waiter task)."""
    held = await pool.get_connection()
    waiter = asyncio.ensure_future(pool.get_connection())
    await until(lambda: pool.stats()["waiters"] == 1, "the waiter to queue")
    await pool.release(held)
    return held, waiter


def test_cancel_in_the_iteration_of_the_handover(redis_server, make_pool, make_apool,
                                                no_checker):
    """A thread's release serves the waiter in C; it is cancelled before its loop collects
    the connection from the inbox."""
    pool = make_apool(redis_server.url, max_connections=1, timeout=30)
    sync_pool = make_pool(redis_server.url, max_connections=1, timeout=30)

    async def main():
        for _ in range(5):
            held = sync_pool.get_connection()
            waiter = asyncio.ensure_future(pool.get_connection())
            await until(lambda: pool.stats()["waiters"] == 1, "the waiter to queue")
            sync_pool.release(held)  # handed to the waiter in C, no await point here
            waiter.cancel()  # same iteration: the loop has not read the notify pipe yet
            with pytest.raises(asyncio.CancelledError):
                await waiter
            st = pool.stats()
            assert (st["in_use"], st["waiters"]) == (0, 0), st
        conn = await pool.get_connection()  # the slot the cancelled waiter was handed came back
        await pool.release(conn)
        assert await ra.Redis(connection_pool=pool).ping() is True
        await pool.aclose()

    run(main())


def test_a_handover_on_the_releasing_loop_needs_no_wake_up(redis_server, make_apool,
                                                          no_checker):
    """release() resolves the future of a waiter on its own loop itself: no byte goes
    through the loop's pipe, and the waiter has its connection without a pipe read."""
    pool = make_apool(redis_server.url, max_connections=1, timeout=30)

    async def main():
        loop = asyncio.get_running_loop()
        for _ in range(5):
            held, waiter = await hand_over(pool)
            with pytest.raises(BlockingIOError):
                os.read(spa._waker(loop).inbox.fileno(), 1)  # the pipe is empty
            st = pool.stats()
            assert (st["in_use"], st["waiters"]) == (1, 0), st  # already the waiter's
            conn = await waiter
            assert conn is held
            await pool.release(conn)
        await pool.aclose()

    run(main())


def test_cancel_after_the_connection_was_collected(redis_server, make_apool, no_checker):
    """The loop resolved the waiter's future; the task is cancelled before it resumes."""
    pool = make_apool(redis_server.url, max_connections=1, timeout=30)

    async def main():
        loop = asyncio.get_running_loop()
        for _ in range(5):
            held, waiter = await hand_over(pool)
            spa._waker(loop).collect()  # resolved already (same loop); the reader's pass finds nothing
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            st = pool.stats()
            assert (st["in_use"], st["waiters"], st["total"]) == (0, 0, 1), st
        assert await ra.Redis(connection_pool=pool).ping() is True
        await pool.aclose()

    run(main())


@pytest.mark.parametrize("kwargs", [{}, {"parser_class": _AsyncRESP2Parser}, {"protocol": 3}],
                         ids=["default-parser", "python-parser", "resp3"])
def test_a_connection_given_back_with_an_unread_reply_is_never_handed_out_as_ready(
        redis_server, make_apool, kwargs):
    # A reply nobody read must make the connection reconnect before it is handed out again,
    # or the next command reads the stale reply as its own (redis-py 8's own check lets it
    # through while maintenance notifications are "auto", as they are by default).
    pool = make_apool(redis_server.url, max_connections=1, timeout=5, **kwargs)

    async def main():
        r = ra.Redis(connection_pool=pool)
        await r.set("k", "fresh")
        conn = await pool.get_connection()
        await conn.send_command("ECHO", "stale")
        await until(lambda: conn._reader is not None and len(conn._reader._buffer) > 0,
                    "the stale reply to arrive")
        await pool.release(conn)
        assert await r.get("k") == b"fresh"
        assert pool.stats()["in_use"] == 0
        await pool.aclose()

    run(main())


def test_connection_of_a_cancelled_command_is_returned(redis_server, make_apool, wait_until):
    # socket_timeout=None: redis-py's read timeout (5 s by default) sometimes turns a cancel
    # into its TimeoutError 5 s later (its own ConnectionPool does the same on Python 3.11)
    pool = make_apool(redis_server.url, max_connections=1, timeout=5, socket_timeout=None)

    async def main():
        r = ra.Redis(connection_pool=pool)
        task = asyncio.ensure_future(r.blpop(["nothing"], timeout=0))  # blocks forever
        await until(lambda: redis_server.info("clients")["blocked_clients"] == "1",
                    "BLPOP to block on the server")
        assert pool.stats()["in_use"] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        st = pool.stats()
        assert st["in_use"] == 0 and st["total"] <= 1, st
        assert await r.set("k", "v") is True  # the slot came back
        assert await r.get("k") == b"v"
        await pool.aclose()

    run(main())
    wait_until(lambda: live_clients(redis_server) == 0, what="the connections to close")


def test_cancel_while_connecting_frees_the_slot(redis_server, make_apool, no_checker):
    pool = make_apool(redis_server.url, max_connections=1, timeout=5)

    async def main():
        for _ in range(5):
            task = asyncio.ensure_future(pool.get_connection())
            await asyncio.sleep(0)  # it took the slot and is connecting (or just connected)
            task.cancel()
            try:
                conn = await task
            except asyncio.CancelledError:
                pass
            else:  # connected before the cancel landed: it is ours to give back
                await pool.release(conn)
            await pool.disconnect()
            st = pool.stats()
            assert st["in_use"] == 0 and st["connecting"] == 0 and st["total"] <= 1, st
        assert await ra.Redis(connection_pool=pool).ping() is True
        await pool.aclose()

    run(main())


# -- several loops ----------------------------------------------------------------------------


def _loop_thread_storm(server, make_apool, start_thread, n_loops: int, limit: int,
                       pools_per_loop: int = 2, tasks_per_loop: int = 20, ops: int = 25):
    apools = [[make_apool(server.url, max_connections=limit, timeout=60)
               for _ in range(pools_per_loop)] for _ in range(n_loops)]
    label = apools[0][0].endpoint
    errors: List[BaseException] = []
    samples: List[tuple] = []
    stop = threading.Event()

    def loop_thread(index: int) -> None:
        async def worker(i: int) -> None:
            r = ra.Redis(connection_pool=apools[index][i % pools_per_loop])
            for _ in range(ops):
                await r.incr("counter")

        async def main():
            results = await asyncio.gather(*(worker(i) for i in range(tasks_per_loop)),
                                           return_exceptions=True)
            errors.extend(r for r in results if isinstance(r, BaseException))
            for pool in apools[index]:
                await pool.aclose()

        try:
            run(main())
        except BaseException as exc:
            errors.append(exc)

    def sampler() -> None:
        for _ in range(200_000):
            if stop.is_set():
                break
            st = sp.stats()[label]
            samples.append((live_clients(server), st["in_use"] + st["idle"] + st["connecting"]))

    sampling = start_thread(sampler)
    threads = [start_thread(loop_thread, i) for i in range(n_loops)]
    for t in threads:
        t.join(120)
    stop.set()
    sampling.join(30)
    assert not any(t.is_alive() for t in threads), "event-loop threads did not finish"
    return errors, samples, label


def test_several_loops_in_several_threads_share_one_budget(redis_server, make_apool,
                                                           start_thread):
    limit, n_loops = 3, 4
    errors, samples, label = _loop_thread_storm(redis_server, make_apool, start_thread,
                                                n_loops, limit)
    assert errors == [], [repr(e)[:200] for e in errors[:3]]
    assert int(redis_server.command("GET", "counter").split(b"\r\n")[1]) == n_loops * 20 * 25
    assert samples and max(s[0] for s in samples) <= limit
    assert max(s[1] for s in samples) <= limit
    assert sp.stats()[label]["in_use"] == 0


def test_one_pool_from_two_loops_in_two_threads(redis_server, start_thread):
    """Two loops queue on one pool at once: each gets exactly what it was handed, nothing
    times out, no internal exception escapes, and every slot comes back."""
    pool = SafeConnectionPool.from_url(redis_server.url, max_connections=2, timeout=10)
    errors: List[BaseException] = []
    barrier = threading.Barrier(2, timeout=30)

    def loop_thread() -> None:
        async def worker() -> None:
            r = ra.Redis(connection_pool=pool)
            for _ in range(30):
                await r.incr("counter")

        async def main() -> None:
            barrier.wait()
            results = await asyncio.gather(*(worker() for _ in range(10)),
                                           return_exceptions=True)
            errors.extend(r for r in results if isinstance(r, BaseException))
            barrier.wait()  # the other loop may still need this loop's connections handed
            await pool.disconnect()

        try:
            run(main(), limit=60)
        except BaseException as exc:
            errors.append(exc)

    threads = [start_thread(loop_thread) for _ in range(2)]
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads), "event-loop threads did not finish"
    assert errors == [], [repr(e)[:200] for e in errors[:3]]
    assert int(redis_server.command("GET", "counter").split(b"\r\n")[1]) == 2 * 10 * 30
    st = pool.stats()
    assert (st["in_use"], st["connecting"], st["waiters"], st["pool_in_use"]) == (0, 0, 0, 0), st
    pool._close_core()


def test_connection_is_never_handed_to_another_loop(redis_server, make_apool, start_thread):
    first = make_apool(redis_server.url, max_connections=1, timeout=10)
    second = make_apool(redis_server.url, max_connections=1, timeout=10)
    ready, done = threading.Event(), threading.Event()
    errors: List[BaseException] = []

    made_on_first: List[object] = []

    def first_loop() -> None:
        async def main():
            conn = await first.get_connection()
            made_on_first.append(conn)
            await first.release(conn)
            ready.set()  # its connection is idle now; keep this loop alive meanwhile
            await until(done.is_set, "the other loop", timeout=60)
            await first.aclose()

        try:
            run(main())
        except BaseException as exc:
            errors.append(exc)

    thread = start_thread(first_loop)
    assert ready.wait(30)
    try:
        async def main():
            conn = await second.get_connection()
            try:
                # its reader, writer and futures belong to the first loop (another thread)
                assert conn is not made_on_first[0]
            finally:
                await second.release(conn)
            await second.aclose()

        run(main(), limit=30)
    finally:
        done.set()
        thread.join(60)
    assert errors == []


def test_pool_per_asyncio_run(redis_server, make_apool):
    for i in range(3):
        pool = make_apool(redis_server.url, max_connections=2, timeout=5)

        async def main():
            return await ra.Redis(connection_pool=pool).incr("runs")

        assert run(main()) == i + 1  # no aclose(): its idle connection stays in the budget


def test_event_loops_do_not_leak_file_descriptors(redis_server, make_apool):
    pool = make_apool(redis_server.url, max_connections=2, timeout=5)

    async def once():
        conn = await pool.get_connection()
        await pool.release(conn)
        await pool.disconnect()

    run(once())
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        run(once())
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) - before < 10


# -- health: paused endpoint -------------------------------------------------------------------


def test_paused_endpoint_fails_fast_and_recovers(redis_server, make_apool):
    pool = make_apool(redis_server.url, max_connections=2, timeout=30)

    async def main():
        r = ra.Redis(connection_pool=pool)
        assert await r.set("k", "v") is True
        redis_server.kill()

        async def refused() -> bool:
            try:
                await r.ping()
            except sp.ServerUnavailableError:
                return True
            except redis.exceptions.ConnectionError:
                return False  # the first failures: the endpoint is not paused yet
            raise AssertionError("a dead server answered")

        deadline = time.monotonic() + 30
        while not await refused():
            assert time.monotonic() < deadline, "the endpoint never paused"
            await asyncio.sleep(0.01)
        assert pool.stats()["state"] == "paused"
        refused_before = pool.stats()["refused_by_state"]
        for _ in range(5):  # fail fast: refused by state, nobody queues
            with pytest.raises(sp.ServerUnavailableError):
                await pool.get_connection()
        st = pool.stats()
        assert st["refused_by_state"] >= refused_before + 5
        assert st["waiters"] == 0 and st["in_use"] == 0
        assert not pool.can_get_connection()
        redis_server.start()
        await until(lambda: pool.stats()["state"] == "ready", "the endpoint to recover", 30)
        assert await r.ping() is True
        assert await r.get("k") is None  # a fresh server (no persistence): it really reconnected
        assert pool.stats()["in_use"] == 0
        await pool.aclose()

    run(main())


def test_waiters_fail_when_the_endpoint_pauses(redis_server, make_apool):
    """Queued tasks do not wait out their timeout for a dead server: the first failed
    connects pause the endpoint and the rest of the queue fails fast."""
    pool = make_apool(redis_server.url, max_connections=1, timeout=None)

    async def main():
        held = await pool.get_connection()
        waiters = [asyncio.ensure_future(pool.get_connection()) for _ in range(4)]
        await until(lambda: pool.stats()["waiters"] == 4, "the waiters to queue")
        redis_server.kill()
        await held.disconnect()  # what redis-py does when a command hits the dead socket
        await pool.release(held)
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, redis.exceptions.ConnectionError) for r in results), results
        assert isinstance(results[-1], sp.ServerUnavailableError), results
        st = pool.stats()
        assert st["state"] == "paused"
        # a probe of the checker may hold a slot (it counts as connecting) right now
        assert (st["waiters"], st["in_use"], st["idle"], st["total"] - st["connecting"]) == \
            (0, 0, 0, 0), st
        with pytest.raises(sp.ServerUnavailableError):
            await pool.get_connection()
        redis_server.start()
        await until(lambda: pool.stats()["state"] == "ready", "the endpoint to recover", 30)
        assert await ra.Redis(connection_pool=pool).ping() is True
        await pool.aclose()

    run(main())


# -- disconnect / aclose -----------------------------------------------------------------------


def test_disconnect_and_aclose(redis_server, make_apool, no_checker, wait_until):
    pool = make_apool(redis_server.url, max_connections=3, timeout=5)
    other = make_apool(redis_server.url, max_connections=3, timeout=5)

    async def main():
        a, b = await pool.get_connection(), await pool.get_connection()
        await pool.release(b)
        await until(lambda: live_clients(redis_server) == 2, "two connections")
        await pool.disconnect(inuse_connections=False)  # the idle one only
        assert pool.stats()["idle"] == 0 and a.is_connected
        await until(lambda: live_clients(redis_server) == 1, "the idle one to close")
        await pool.disconnect()  # now the one in use as well
        assert not a.is_connected
        await until(lambda: live_clients(redis_server) == 0, "both to close")
        await pool.release(a)
        conn = await pool.get_connection()  # reconnects inside the budget
        assert await ra.Redis(connection_pool=pool).ping() is True
        await pool.release(conn)
        await pool.aclose()
        with pytest.raises(sp.PoolClosedError):
            await pool.get_connection()
        await pool.aclose()  # twice is harmless
        assert other.stats()["pools"] == 1
        # the endpoint's other pool is untouched
        assert await ra.Redis(connection_pool=other).ping() is True
        await other.aclose()

    run(main())
    wait_until(lambda: live_clients(redis_server) == 0, what="every connection to close")


def test_aclose_wakes_waiters(redis_server, make_apool, wait_until):
    pool = make_apool(redis_server.url, max_connections=1, timeout=None)

    async def main():
        held = await pool.get_connection()
        waiters = [asyncio.ensure_future(pool.get_connection()) for _ in range(3)]
        await until(lambda: pool.stats()["waiters"] == 3, "the waiters to queue")
        await pool.aclose()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, sp.PoolClosedError) for r in results), results
        await pool.release(held)  # a connection out at close comes back and is closed

    run(main())
    wait_until(lambda: live_clients(redis_server) == 0, what="the returned connection to close")


# -- misuse ----------------------------------------------------------------------------------


def test_double_release(redis_server, make_apool, no_checker):
    pool = make_apool(redis_server.url, max_connections=2, timeout=0)

    async def main():
        conn = await pool.get_connection()
        await pool.release(conn)
        with pytest.raises(sp.DoubleReleaseError) as info:
            await pool.release(conn)
        assert str(info.value)
        st = pool.stats()
        assert st["in_use"] == 0 and st["idle"] == 1
        a, b = await pool.get_connection(), await pool.get_connection()
        assert a is not b  # idle once, not twice
        with pytest.raises(sp.PoolTimeoutError):
            await pool.get_connection()
        await pool.release(a)
        await pool.release(b)
        await pool.aclose()

    run(main())


def test_foreign_connections(redis_server_factory, make_pool, make_apool, no_checker):
    # no_checker: exact slot accounting (a probe may hold one of the two slots)
    s1, s2 = redis_server_factory(), redis_server_factory()
    p1 = make_apool(s1.url, max_connections=2, timeout=0)
    p1b = make_apool(s1.url, max_connections=2, timeout=0)
    p2 = make_apool(s2.url, max_connections=2, timeout=0)
    sync_pool = make_pool(s1.url, max_connections=2, timeout=0)

    async def main():
        conn = await p1.get_connection()
        for pool in (p1b, p2):
            with pytest.raises(sp.ForeignConnectionError):
                await pool.release(conn)
            assert not pool.owns_connection(conn)
        hand_made = ra.Connection(host=s1.host, port=s1.port)
        with pytest.raises(sp.ForeignConnectionError):
            await p1.release(hand_made)
        sync_conn = sync_pool.get_connection()
        with pytest.raises(sp.ForeignConnectionError):
            await p1.release(sync_conn)
        sync_pool.release(sync_conn)
        assert p1.stats()["pool_in_use"] == 1 and p1b.stats()["pool_in_use"] == 0
        assert p2.stats()["in_use"] == 0
        assert p1.owns_connection(conn)
        await p1.release(conn)  # still p1's to give back
        assert p1.stats()["in_use"] == 0
        for pool in (p1, p1b, p2):
            await pool.aclose()

    run(main())


def test_a_connection_comes_back_only_after_its_socket_is_closed(redis_server, no_checker):
    # The command's connection is killed under it, redis-py reconnects inside the command
    # (its retry), and the command is cancelled while it waits on the new socket: redis-py's
    # disconnect(nowait=True) leaves that socket to a close callback of the loop. When the
    # pool takes the connection back, the server must no longer hold a live socket of it,
    # or another loop could open one in its slot while this one still counts.
    seen: List[int] = []

    class Watched(SafeConnectionPool):
        def _release_fd(self, connection, fd):
            seen.append(redis_server.live_clients())
            return super()._release_fd(connection, fd)

    # retry_on_error: redis-py before 6 retries nothing unless told what
    pool = Watched.from_url(redis_server.url, max_connections=1, timeout=5, socket_timeout=None,
                            retry=Retry(NoBackoff(), 1),
                            retry_on_error=[redis.exceptions.ConnectionError])

    async def main():
        r = ra.Redis(connection_pool=pool)
        first = await r.client_id()
        seen.clear()
        task = asyncio.ensure_future(r.blpop(["nothing"], timeout=0))
        await until(lambda: redis_server.info("clients")["blocked_clients"] == "1",
                    "BLPOP to block on the server")
        redis_server.command("CLIENT", "KILL", "ID", str(first))
        await until(lambda: redis_server.info("clients")["blocked_clients"] == "1"
                    and redis_server.listed_clients() == 1,
                    "the retried BLPOP to block on a new socket")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == [0], f"the server still held {seen} live socket(s) of the connection"
        assert await r.ping() is True
        await pool.aclose()

    try:
        run(main())
    finally:
        pool._close_core()


def test_a_checkout_dropped_unreleased_gives_its_slot_back(redis_server, no_checker):
    # A task that checks out and loses the connection without release(): the slot
    # comes back once the connection is collected, and its socket is closed first
    # (its transport would otherwise keep it open after the connection is gone).
    pool = SafeConnectionPool.from_url(redis_server.url, max_connections=1, timeout=5)
    seen: List[int] = []

    async def main():
        conn = await pool.get_connection()
        await conn.send_command("PING")
        assert await conn.read_response() == b"PONG"
        assert pool.stats()["in_use"] == 1
        del conn  # dropped: never released
        gc.collect()
        st = pool.stats()
        assert st["in_use"] == 0 and st["total"] == 0, st
        seen.append(redis_server.live_clients())
        # the slot is usable again, within the budget of one
        assert await ra.Redis(connection_pool=pool).ping() is True
        assert redis_server.live_clients() == 1
        await pool.aclose()

    try:
        run(main())
    finally:
        pool._close_core()
    assert seen == [0], f"the dropped connection's socket was still open: {seen}"


def test_idle_and_lifetime_limits_close_asyncio_connections(redis_server):
    pool = SafeConnectionPool.from_url(redis_server.url, max_connections=2, max_idle_time=0.05)
    assert pool._max_idle_time == 0.05 and pool.stats()["max_idle_time"] == 0.05

    async def main():
        r = ra.Redis(connection_pool=pool)
        assert await r.ping() is True
        assert redis_server.live_clients() == 1
        # the checker retires it; the loop closes it at the pool's next call
        await until(lambda: pool.stats()["idle"] == 0, "the idle connection to expire")
        assert await r.ping() is True  # a fresh one, within the budget
        st = pool.stats()
        assert st["total"] == 1 and st["closed"] >= 1, st
        await until(lambda: redis_server.live_clients() == 1, "the expired socket to close")
        await pool.aclose()

    run(main())
    assert SafeConnectionPool.from_url(redis_server.url, max_lifetime=30)._max_lifetime == 30


def test_leak_detector_sees_asyncio_checkouts(redis_server, caplog):
    from redis_safepool import observe

    pool = SafeConnectionPool.from_url(redis_server.url, max_connections=1, leak_threshold=30)

    async def held_here():
        return await pool.get_connection()

    async def main():
        conn = await held_here()
        assert observe.held() == 1
        leaks = observe.check_leaks(now=time.monotonic() + 31)
        assert len(leaks) == 1 and "held_here" in leaks[0]["stack"], leaks
        with caplog.at_level(logging.WARNING, logger="redis_safepool.leak"):
            del conn
            gc.collect()
        assert pool.stats()["in_use"] == 0
        assert observe.held() == 0
        msgs = [r.getMessage() for r in caplog.records if r.name == "redis_safepool.leak"]
        assert any("dropped without release" in m for m in msgs), msgs
        await pool.aclose()

    try:
        run(main())
    finally:
        observe.reset()
        pool._close_core()
