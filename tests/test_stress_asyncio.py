"""Bounded asyncio stress: two event loops in two threads share pools under cancellation and churn."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
import traceback
from typing import Dict, List

import pytest
import redis.asyncio as ra
import redis.exceptions

import redis_safepool as sp
from redis_safepool.asyncio import SafeConnectionPool

SEED = int(os.environ.get("SAFEPOOL_STRESS_SEED", random.randrange(2 ** 32)))
LIMIT = 4               # max_connections of every pool (one shared budget)
POOLS = 3               # pool objects shared by both loops
LOOPS = 2
TASKS_PER_LOOP = 24
RUN_SECONDS = 5.0       # each loop stops starting operations after this
MAX_OPS_PER_TASK = 3_000
TIMEOUTS = (0, 0.001, 0.005, 0.02, 0.2, 2.0)  # pool timeouts, chosen at random per pool


def allowed(exc: BaseException) -> bool:
    """What a caller may see: cancellation, wait_for's timeout, redis-py's connection errors."""
    if isinstance(exc, (asyncio.CancelledError, asyncio.TimeoutError)):
        return True
    return isinstance(exc, redis.exceptions.ConnectionError) or (
        isinstance(exc, redis.exceptions.TimeoutError))


class Shared:
    """The pools both loops use; a closed pool is replaced by a fresh one."""

    def __init__(self, url: str, rng: random.Random) -> None:
        self.url = url
        self.lock = threading.Lock()
        self.all: List[SafeConnectionPool] = []
        self.pools = [self.fresh(rng) for _ in range(POOLS)]

    def fresh(self, rng: random.Random) -> SafeConnectionPool:
        pool = SafeConnectionPool.from_url(self.url, max_connections=LIMIT,
                                           timeout=rng.choice(TIMEOUTS))
        self.all.append(pool)
        return pool

    def pick(self, rng: random.Random) -> SafeConnectionPool:
        with self.lock:
            return rng.choice(self.pools)

    def replace(self, pool: SafeConnectionPool, rng: random.Random) -> None:
        with self.lock:
            if pool in self.pools:
                self.pools[self.pools.index(pool)] = self.fresh(rng)


async def one_op(shared: Shared, rng: random.Random) -> None:
    pool = shared.pick(rng)
    r = ra.Redis(connection_pool=pool)
    roll = rng.random()
    if roll < 0.45:
        await r.incr("n")
    elif roll < 0.60:  # a short wait_for around a command that may have to queue
        await asyncio.wait_for(r.incr("n"), rng.choice((0.0005, 0.002, 0.01)))
    elif roll < 0.75:  # checkout, maybe yield, release
        conn = await pool.get_connection()
        try:
            if rng.random() < 0.5:
                await asyncio.sleep(0)
        finally:
            await pool.release(conn)
    elif roll < 0.88:  # a command cancelled at a random moment
        task = asyncio.ensure_future(r.incr("n"))
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    elif roll < 0.93:
        await pool.disconnect(inuse_connections=rng.random() < 0.5)
    elif roll < 0.95:
        pool.reset()
    elif roll < 0.96:
        await pool.aclose()
        shared.replace(pool, rng)
    else:
        st = pool.stats()
        assert min(v for v in st.values() if isinstance(v, int)) >= 0, st


def loop_thread(shared: Shared, index: int, failures: List[str], done: Dict[int, int]) -> None:
    rng = random.Random(SEED * 31 + index)

    async def worker(wrng: random.Random, stop_at: float) -> int:
        ops = 0
        for _ in range(MAX_OPS_PER_TASK):
            if time.monotonic() >= stop_at:
                break
            try:
                await one_op(shared, wrng)
            except BaseException as exc:  # noqa: BLE001 - every escape is judged here
                if not allowed(exc):
                    failures.append(f"loop {index}: {type(exc).__module__}."
                                    f"{type(exc).__qualname__}: {exc!r}\n"
                                    + "".join(traceback.format_exception(exc))[-4000:])
                    return ops
                if isinstance(exc, asyncio.CancelledError) and \
                        asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
            ops += 1
        return ops

    async def main() -> None:
        stop_at = time.monotonic() + RUN_SECONDS
        workers = [worker(random.Random(rng.random()), stop_at) for _ in range(TASKS_PER_LOOP)]
        counts = await asyncio.gather(*workers)
        done[index] = sum(counts)
        for pool in list(shared.all):  # this loop's connections: closed on this loop
            await pool.disconnect()

    try:
        asyncio.run(asyncio.wait_for(main(), RUN_SECONDS + 60))
    except BaseException as exc:  # noqa: BLE001
        failures.append(f"loop {index} died: {exc!r}")


@pytest.mark.filterwarnings("ignore::redis_safepool.observe.PoolPerRequestWarning")  # fresh pools on purpose
def test_two_loops_share_pools_under_cancellation_and_churn(redis_server, start_thread,
                                                            wait_until):
    print(f"seed {SEED} (SAFEPOOL_STRESS_SEED={SEED} repeats this run)")
    rng = random.Random(SEED)
    shared = Shared(redis_server.url, rng)
    label = shared.pools[0].endpoint
    failures: List[str] = []
    done: Dict[int, int] = {}
    peak = [0]
    stop = threading.Event()

    def sampler() -> None:
        for _ in range(1_000_000):
            if stop.is_set():
                break
            peak[0] = max(peak[0], redis_server.live_clients())

    sampling = start_thread(sampler)
    threads = [start_thread(loop_thread, shared, i, failures, done) for i in range(LOOPS)]
    for t in threads:
        t.join(RUN_SECONDS + 90)
    stop.set()
    sampling.join(30)
    where = f"(seed {SEED})"
    assert not any(t.is_alive() for t in threads), f"an event-loop thread hung {where}"
    assert failures == [], f"{where}\n" + "\n".join(failures[:3])
    assert len(done) == LOOPS and all(done.values()), (done, where)

    def settled():
        st = sp.stats()[label]
        # a probe of the checker may hold a slot (connecting) for a moment
        return st if (st["in_use"], st["connecting"], st["closing"]) == (0, 0, 0) else None

    st = wait_until(settled, timeout=30, what=f"the budget to settle {where}")
    numbers = {k: v for k, v in st.items() if isinstance(v, int) and not isinstance(v, bool)}
    assert all(v >= 0 for v in numbers.values()), (numbers, where)
    assert st["total"] == st["idle"], (st, where)
    assert st["created"] - st["closed"] == st["total"], (st, where)
    assert st["waiters"] == 0, (st, where)
    assert peak[0] <= LIMIT, (f"the server saw {peak[0]} connections for max_connections="
                              f"{LIMIT} {where}")
    for pool in shared.all:
        assert pool.stats()["pool_in_use"] == 0, (pool.stats(), where)
        pool._close_core()
