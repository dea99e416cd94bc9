"""asyncio: `redis.asyncio.Redis.get` from N tasks sharing one pool of 8, and checkout+release pairs/s."""

from __future__ import annotations

import asyncio
import cProfile
import gc
import pstats
import statistics
import time
from typing import Any, Dict, List, Optional, Tuple

import redis.asyncio as ra
from redis.exceptions import ConnectionError as RedisConnectionError
from redis._parsers import _AsyncRESP2Parser
from redis.utils import HIREDIS_AVAILABLE

import _common as c

NAME = "async_throughput"
LIMIT = 8
TASKS = (1, 64, 300, 1000, 10_000)
PAIR_TASKS = (1, 64, 1000)
WORK_TASKS = (1, 64, 1000, 10_000)
WORK_CALLS = 1000  # GETs counted per pool and task count (at least one per task)
PARSERS: Dict[str, type] = {"python": _AsyncRESP2Parser}
if HIREDIS_AVAILABLE:
    from redis._parsers import _AsyncHiredisParser
    PARSERS["hiredis"] = _AsyncHiredisParser
MIN_MEAN_OPS_FOR_FAIRNESS = 2.0  # below this a slice is shorter than one turn of the queue
RATIO_TARGET = 1.2
P99_FROM_TASKS = 300
TASKS_PER_SLICE_SECOND = 500  # a slice of `slice_seconds` is stretched beyond this many tasks


NO_POOL = "no pool"  # one connection handed to every call: a GET with no pool work at all


class _OneConnection(ra.ConnectionPool):
    """A "pool" that hands its one connection to every call (1 task only): what a
    GET costs when checkout and release cost nothing, the floor any pool adds to."""

    _conn: Any = None

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if self._conn is None:
            self._conn = self.make_connection()
            await self._conn.connect()
        return self._conn

    async def release(self, connection: Any) -> None:  # type: ignore[override]
        pass

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.disconnect()


def _make_pool(ctx: c.Context, kind: str, **kw: Any) -> Any:
    if kind == NO_POOL:
        return _OneConnection(host=ctx.host, port=ctx.port, socket_timeout=5,
                              socket_connect_timeout=5, **kw)
    return c.make_pool(ctx, kind, LIMIT, aio=True, **kw)


async def run_tasks(n: int, body: Any, seconds: float) -> Tuple[List[Any], float]:
    """Start ``n`` tasks running ``body(deadline)`` together; wait (bounded) for all of them."""
    start = time.perf_counter()
    deadline = start + seconds
    tasks = [asyncio.ensure_future(body(deadline)) for _ in range(n)]
    try:
        results = await asyncio.wait_for(asyncio.gather(*tasks), seconds + c.JOIN_SLACK)
    except asyncio.TimeoutError:
        raise RuntimeError(f"asyncio benchmark tasks still running {c.JOIN_SLACK:.0f}s past "
                           "their deadline") from None
    return results, seconds


async def get_loop(client: ra.Redis, deadline: float) -> Dict[str, Any]:
    """GET the bench key until ``deadline``. Calls that end by then count as ops; every
    call's latency counts, also of the last one that ends later (else a task starved
    past the deadline would vanish from the latencies)."""
    get, key, now = client.get, c.BENCH_KEY, time.perf_counter
    lat: List[float] = []
    ops = errors = 0
    for _ in range(c.MAX_OPS_PER_THREAD):
        t0 = now()
        try:
            await get(key)
        except RedisConnectionError as exc:  # a pool timeout: counted, and timed
            if not _is_wait_timeout(exc):
                raise
            errors += 1
            t1 = now()
        else:
            t1 = now()
            ops += t1 <= deadline
        # a caller that waited out the pool's timeout waited that long for nothing: its
        # wait is a latency like any other (leaving it out would flatter a pool that
        # gives up on its callers)
        lat.append(t1 - t0)
        if t1 > deadline:
            break
    return {"ops": ops, "lat": lat, "errors": errors}


def _is_wait_timeout(exc: BaseException) -> bool:
    """A pool that gave up waiting for a connection."""
    return c.is_pool_exhausted(exc)


async def pair_loop(pool: Any, deadline: float) -> Dict[str, Any]:
    """get_connection() + release() until ``deadline``."""
    get, rel, now = pool.get_connection, pool.release, time.perf_counter
    ops = 0
    for _ in range(c.MAX_OPS_PER_THREAD):
        conn = await get()
        await rel(conn)
        if now() > deadline:
            break
        ops += 1
    return {"ops": ops, "lat": [], "errors": 0}


def measure(ctx: c.Context, kind: str, tasks: int, seconds: float, pairs: bool,
            parser: Optional[str] = None) -> Dict[str, Any]:
    async def main() -> Dict[str, Any]:
        kw = {} if parser is None else {"parser_class": PARSERS[parser]}
        pool = _make_pool(ctx, kind, **kw)
        client = ra.Redis(connection_pool=pool)
        try:
            await c.prewarm_async(pool, LIMIT if kind not in (c.CP, NO_POOL) else min(tasks, LIMIT))
            if pairs:
                body = lambda deadline: pair_loop(pool, deadline)  # noqa: E731
            else:
                body = lambda deadline: get_loop(client, deadline)  # noqa: E731
            await run_tasks(min(tasks, LIMIT), body, ctx.settings.warmup_seconds)
            cpu_before = c.cpu_seconds()
            results, elapsed = await run_tasks(tasks, body, seconds)
            cpu = c.cpu_seconds() - cpu_before
        finally:
            await pool.aclose()
        lat: List[float] = []
        for r in results:
            lat += r["lat"]
        per_task = [r["ops"] for r in results]
        return {"ops": sum(per_task), "elapsed": elapsed, "lat": lat, "per_task": per_task,
                "errors": sum(r["errors"] for r in results), "cpu": cpu}

    try:
        return asyncio.run(main())
    finally:
        gc.collect()


def calls_per_get(ctx: c.Context, kind: str, tasks: int) -> Optional[float]:
    """Python function calls (cProfile's count) per GET with ``tasks`` tasks on 8
    connections: the work a call costs, which the machine's load does not change.
    Every task makes one GET first (task start-up is not counted), then waits for
    the others; None when the pool gave up on some call."""
    async def main() -> Optional[float]:
        pool = c.make_pool(ctx, kind, LIMIT, aio=True, parser_class=PARSERS["python"])
        pool.timeout = None  # a starved call is counted late, not lost (bounded below)
        client = ra.Redis(connection_pool=pool)
        go = asyncio.Event()
        per_task = max(1, WORK_CALLS // tasks)
        arrived = [0]

        async def body() -> None:
            await client.get(c.BENCH_KEY)
            arrived[0] += 1
            if arrived[0] == tasks:
                go.set()
            await go.wait()
            for _ in range(per_task):
                await client.get(c.BENCH_KEY)

        profile = cProfile.Profile()
        try:
            await c.prewarm_async(pool, LIMIT)
            runs = [asyncio.ensure_future(body()) for _ in range(tasks)]
            await asyncio.wait_for(go.wait(), 10 * ctx.settings.wait_timeout)
            profile.enable()
            try:
                await asyncio.wait_for(asyncio.gather(*runs), 10 * ctx.settings.wait_timeout)
            finally:
                profile.disable()
        except (RedisConnectionError, asyncio.TimeoutError):
            return None
        finally:
            await pool.aclose()
        return pstats.Stats(profile).total_calls / (per_task * tasks)

    try:
        return asyncio.run(main())
    finally:
        gc.collect()


def slice_for(ctx: c.Context, tasks: int) -> float:
    """Slices grow beyond TASKS_PER_SLICE_SECOND tasks, so that every task can have
    its turns in one slice even at 10,000 tasks."""
    return ctx.settings.slice_seconds * max(1.0, tasks / TASKS_PER_SLICE_SECOND)


def _fairness(per_task: List[int]) -> Optional[Dict[str, float]]:
    """The thread benchmark's spread measure, or None when a slice is too short to say."""
    if not per_task or sum(per_task) / len(per_task) < MIN_MEAN_OPS_FOR_FAIRNESS:
        return None
    return c.spread_summary(per_task)


def _round_ratios(safe: List[float], bcp: List[float]) -> List[float]:
    """Safe/BCP of each round (each round measures both, one right after the other)."""
    return [r for r in (c.ratio(s, b) for s, b in zip(safe, bcp)) if r is not None]


def _median(values: List[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def _round_spread(safe: List[float], bcp: List[float]) -> str:
    """The median of Safe/BCP over the rounds, with its min-max."""
    ratios = _round_ratios(safe, bcp)
    if not ratios:
        return "n/a"
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def _kinds(ctx: c.Context, pairs_one_task: bool = False) -> List[str]:
    kinds = [c.BCP] + ([c.SAFE] if c.SAFE in ctx.kinds else [])
    return ([c.CP] + kinds) if pairs_one_task else kinds


def run(ctx: c.Context) -> c.Section:
    kinds = _kinds(ctx)
    has_safe = c.SAFE in kinds
    acc: Dict[Tuple[str, int, str], Dict[str, Any]] = {}
    fair: Dict[Tuple[str, int, str], Optional[Dict[str, float]]] = {}
    for parser in PARSERS:
        for tasks in TASKS:
            ctx.log(f"  {NAME}: {parser} parser, {tasks} tasks on {LIMIT}")

            seconds = slice_for(ctx, tasks)

            def one(kind: str, _round: int) -> None:
                m = measure(ctx, kind, tasks, seconds, False, parser)
                a = acc.setdefault((parser, tasks, kind), {"ops": 0, "elapsed": 0.0, "lat": [],
                                                           "errors": 0, "cpu": 0.0, "slices": []})
                for k in ("ops", "elapsed", "lat", "errors", "cpu"):
                    a[k] += m[k]
                a["slices"].append(m["ops"] / m["elapsed"])
                f = _fairness(m["per_task"])
                key = (parser, tasks, kind)
                if f is not None and (fair.get(key) is None or f["jain"] < fair[key]["jain"]):
                    fair[key] = f  # the least fair slice
                fair.setdefault(key, None)
            c.alternate(ctx, one, kinds + ([NO_POOL] if tasks == 1 else []))

    pair_acc: Dict[Tuple[int, str], Dict[str, float]] = {}
    for tasks in PAIR_TASKS:
        ctx.log(f"  {NAME}: checkout+release pairs, {tasks} tasks on {LIMIT}")
        pkinds = _kinds(ctx, pairs_one_task=tasks == 1)

        def one_pair(kind: str, _round: int) -> None:
            m = measure(ctx, kind, tasks, ctx.settings.slice_seconds, True)
            a = pair_acc.setdefault((tasks, kind), {"ops": 0, "elapsed": 0.0})
            a["ops"] += m["ops"]
            a["elapsed"] += m["elapsed"]
        c.alternate(ctx, one_pair, pkinds)

    work: Dict[Tuple[int, str], Optional[float]] = {}
    for tasks in WORK_TASKS:
        ctx.log(f"  {NAME}: Python calls per GET, {tasks} tasks on {LIMIT}")
        for kind in kinds:
            work[(tasks, kind)] = calls_per_get(ctx, kind, tasks)

    rate = {k: a["ops"] / a["elapsed"] for k, a in acc.items()}
    lats = {k: c.latency_summary(a["lat"]) for k, a in acc.items()}
    prate = {k: a["ops"] / a["elapsed"] for k, a in pair_acc.items()}

    cpu_us = {k: 1e6 * a["cpu"] / a["ops"] if a["ops"] else float("nan") for k, a in acc.items()}

    th = ["parser", "tasks"] + [f"{c.SHORT[k]} ops/s" for k in kinds] + \
        [f"{c.SHORT[k]} timeouts" for k in kinds] + [f"{c.SHORT[k]} CPU us/op" for k in kinds] + \
        (["Safe/BCP", "Safe/BCP per round: median (min-max)"] if has_safe else [])
    lh = ["parser", "tasks"] + [f"{c.SHORT[k]} p50/p99/max ms" for k in kinds]
    fh = ["parser", "tasks"] + [f"{c.SHORT[k]} starving / Jain" for k in kinds]
    trows, lrows, frows = [], [], []
    for parser in PARSERS:
        for tasks in TASKS:
            head = [parser, str(tasks)]
            row = head + [c.fmt_rate(rate[(parser, tasks, k)]) for k in kinds]
            row += [str(acc[(parser, tasks, k)]["errors"]) for k in kinds]
            row += [f"{cpu_us[(parser, tasks, k)]:.0f}" for k in kinds]
            if has_safe:
                row.append(c.fmt_ratio(c.ratio(rate[(parser, tasks, c.SAFE)],
                                               rate[(parser, tasks, c.BCP)])))
                row.append(_round_spread(acc[(parser, tasks, c.SAFE)]["slices"],
                                         acc[(parser, tasks, c.BCP)]["slices"]))
            trows.append(row)
            lrows.append(head + ["/".join(c.fmt_ms(lats[(parser, tasks, k)][q])
                                          for q in ("p50", "p99", "max")) for k in kinds])
            cells = []
            for k in kinds:
                f = fair.get((parser, tasks, k))
                cells.append("n/a" if f is None else f"{f['starving']} / {f['jain']:.3f}")
            frows.append(head + cells)
    ph = ["tasks"] + [f"{c.SHORT[k]} pairs/s" for k in (c.CP, c.BCP, c.SAFE)
                      if k == c.CP or k in kinds] + (["Safe/BCP", "Safe/CP"] if has_safe else [])
    prows = []
    for tasks in PAIR_TASKS:
        row = [str(tasks)] + [c.fmt_rate(prate.get((tasks, k), float("nan")))
                              for k in (c.CP, c.BCP, c.SAFE) if k == c.CP or k in kinds]
        if has_safe:
            s = prate[(tasks, c.SAFE)]
            row += [c.fmt_ratio(c.ratio(s, prate[(tasks, c.BCP)])),
                    c.fmt_ratio(c.ratio(s, prate.get((tasks, c.CP))))]
        prows.append(row)

    wh = ["tasks"] + [f"{c.SHORT[k]} Python calls/GET" for k in kinds] + \
        (["Safe/BCP"] if has_safe else [])
    wrows = []
    for tasks in WORK_TASKS:
        cells = [f"{work[(tasks, k)]:.0f}" if work[(tasks, k)] is not None else "n/a"
                 for k in kinds]
        if has_safe:
            cells.append(c.fmt_ratio(c.ratio(work[(tasks, c.SAFE)], work[(tasks, c.BCP)])))
        wrows.append([str(tasks)] + cells)

    nh = ["parser", f"{NO_POOL} ops/s", f"{NO_POOL} CPU us/op", "BCP ops/s", "BCP CPU us/op",
          "no pool/BCP: the most any pool can reach", "Safe/BCP"]
    nrows = []
    for parser in PARSERS:
        bare, bcp = (parser, 1, NO_POOL), (parser, 1, c.BCP)
        nrows.append([parser, c.fmt_rate(rate[bare]), f"{cpu_us[bare]:.0f}",
                      c.fmt_rate(rate[bcp]), f"{cpu_us[bcp]:.0f}",
                      _round_spread(acc[bare]["slices"], acc[bcp]["slices"]),
                      _round_spread(acc[(parser, 1, c.SAFE)]["slices"], acc[bcp]["slices"])
                      if has_safe else "n/a"])

    section = c.Section(
        name=NAME, title="async_throughput: redis.asyncio.Redis.get from N tasks on 8 connections",
        about=(f"One event loop; N tasks each `await redis.asyncio.Redis(connection_pool=pool)"
               f".get(key)` (100-byte value) in a loop, sharing one pool of {LIMIT} connections: "
               "`redis.asyncio.BlockingConnectionPool` (BCP) against "
               "`redis_safepool.asyncio.SafeConnectionPool` (Safe), "
               f"{ctx.settings.cell_seconds:g}s per pool per row in {ctx.settings.rounds} "
               f"alternating slices (times tasks/{TASKS_PER_SLICE_SECOND} above "
               f"{TASKS_PER_SLICE_SECOND} tasks, so every task gets turns); only calls "
               "that end inside a slice count as ops, but the "
               "latency of the last call a task started counts even when it ends after the "
               "slice (a starved task is not left out); a call that "
               f"waited out the pool's {ctx.settings.wait_timeout:g}s timeout is counted as a "
               "timeout, not as an op, and its wait counts in the latencies (a caller waited "
               "that long for nothing). CPU us/op: this process's CPU time (all threads) per "
               "call, steadier than ops/s on a shared machine. Safe/BCP: all slices' calls over "
               "all slices' time; per round: the median of the rounds' ratios (each "
               "round runs both pools, one right after the other) and the lowest and "
               "highest; the target is judged on that median. Fairness: "
               "per-task completed calls of the least fair slice (a task is *starving* below "
               "10% of the mean, Jain 1.0 = perfectly even); n/a when a slice is shorter than "
               f"{MIN_MEAN_OPS_FOR_FAIRNESS:g} calls per task. Pairs: `await get_connection()` + "
               "`await release()` per task in a loop (CP = `redis.asyncio.ConnectionPool`, "
               "1 task only: it has no wait queue). Python calls/GET: cProfile's count of "
               f"function calls per GET over {WORK_CALLS} GETs (at least one per task; "
               "python parser), the work a call costs whatever the machine's load; n/a "
               "when the pool gave up on a call. No pool (1 task): one connection handed to "
               "every call with no checkout or release work, alternated with the pools: "
               "no pool/BCP is the Safe/BCP a pool that cost nothing would reach."),
        tables=[(th, trows), (lh, lrows), (fh, frows), (nh, nrows), (ph, prows), (wh, wrows)],
        data={"rate": {"/".join(map(str, k)): v for k, v in rate.items()},
              "latency": {"/".join(map(str, k)): v for k, v in lats.items()},
              "fairness": {"/".join(map(str, k)): v for k, v in fair.items()},
              "pairs": {"/".join(map(str, k)): v for k, v in prate.items()},
              "calls_per_get": {"/".join(map(str, k)): v for k, v in work.items()},
              "cpu_us_per_op": {"/".join(map(str, k)): v for k, v in cpu_us.items()}},
    )
    if has_safe:
        for parser in PARSERS:
            ratios = {t: _median(_round_ratios(acc[(parser, t, c.SAFE)]["slices"],
                                               acc[(parser, t, c.BCP)]["slices"]))
                      for t in TASKS}
            measured = ", ".join(f"{t}: {c.fmt_ratio(r)}" for t, r in ratios.items())
            section.targets.append(c.Target(
                f"asyncio GET on 8 ({parser}): >= {RATIO_TARGET:g}x BCP at every task count "
                "(median of rounds)",
                measured, None if None in ratios.values()
                else all(r >= RATIO_TARGET for r in ratios.values())))
            p99 = {t: (lats[(parser, t, c.SAFE)]["p99"], lats[(parser, t, c.BCP)]["p99"])
                   for t in TASKS if t >= P99_FROM_TASKS}
            section.targets.append(c.Target(
                f"asyncio GET on 8 ({parser}): p99 < BCP p99 from {P99_FROM_TASKS} tasks",
                ", ".join(f"{t}: {c.fmt_ms(s)} vs {c.fmt_ms(b)} ms" for t, (s, b) in p99.items()),
                all(s < b for s, b in p99.values())))
            judged = [fair[(parser, t, c.SAFE)] for t in TASKS
                      if fair.get((parser, t, c.SAFE)) is not None]
            section.targets.append(c.Target(
                f"asyncio GET on 8 ({parser}): no starving task",
                f"{sum(f['starving'] for f in judged)} starving over {len(judged)} task counts",
                None if not judged else all(f["starving"] == 0 for f in judged)))
    return section
