"""End-to-end `redis.Redis.get` ops/s and p50/p99/max latency per pool, parser, limit and thread count."""

from __future__ import annotations

import time
from typing import Any, Dict, List, Tuple

import redis
from redis._parsers import _RESP2Parser
from redis.utils import HIREDIS_AVAILABLE

import _common as c

NAME = "get_throughput"
LIMITS = (8, 64)
THREADS = (1, 16, 64)
PARSERS: Dict[str, type] = {"python": _RESP2Parser}
if HIREDIS_AVAILABLE:
    from redis._parsers import _HiredisParser
    PARSERS["hiredis"] = _HiredisParser


def get_loop(client: redis.Redis, deadline: float) -> Dict[str, Any]:
    """GET the bench key until ``deadline``; returns ops, exhausted-pool errors, latencies."""
    get, key, now = client.get, c.BENCH_KEY, time.perf_counter
    lat: List[float] = []
    errors = 0
    for _ in range(c.MAX_OPS_PER_THREAD):
        t0 = now()
        try:
            get(key)
        except Exception as exc:
            if not c.is_pool_exhausted(exc):
                raise
            errors += 1
            t1 = now()
        else:
            t1 = now()
            lat.append(t1 - t0)
        if t1 >= deadline:
            break
    return {"ops": len(lat), "errors": errors, "lat": lat}


Cell = Tuple[str, int, int, str]  # parser, limit, threads, kind


def measure(ctx: c.Context, kind: str, parser: str, limit: int, threads: int,
            seconds: float) -> Dict[str, Any]:
    pool = c.make_pool(ctx, kind, limit, parser_class=PARSERS[parser])
    client = redis.Redis(connection_pool=pool)
    try:
        c.prewarm(pool, min(threads, limit))
        body = lambda i, deadline: get_loop(client, deadline)  # noqa: E731
        c.run_threads(threads, body, ctx.settings.warmup_seconds)
        run = c.run_threads(threads, body, seconds)
    finally:
        c.close_pool(pool)
    lat: List[float] = []
    for r in run.results:
        lat += r["lat"]
    return {"ops": len(lat), "errors": sum(r["errors"] for r in run.results),
            "elapsed": run.elapsed, "lat": lat}


def run(ctx: c.Context) -> c.Section:
    acc: Dict[Cell, Dict[str, Any]] = {}
    for parser in PARSERS:
        for limit in LIMITS:
            for threads in THREADS:
                ctx.log(f"  {NAME}: {parser} parser, limit {limit}, {threads} threads")

                def one(kind: str, _round: int) -> None:
                    m = measure(ctx, kind, parser, limit, threads, ctx.settings.slice_seconds)
                    a = acc.setdefault((parser, limit, threads, kind),
                                       {"ops": 0, "errors": 0, "elapsed": 0.0, "lat": []})
                    for k in ("ops", "errors", "elapsed", "lat"):
                        a[k] += m[k]
                c.alternate(ctx, one)

    rate = {cell: a["ops"] / a["elapsed"] for cell, a in acc.items()}
    lats = {cell: c.latency_summary(a["lat"]) for cell, a in acc.items()}
    errors = {cell: int(a["errors"]) for cell, a in acc.items()}
    has_safe = c.SAFE in ctx.kinds

    th = ["parser", "limit", "threads"] + [f"{c.SHORT[k]} ops/s" for k in ctx.kinds]
    th += ["CP errors"] + (["Safe/CP", "Safe/BCP"] if has_safe else [])
    lh = ["parser", "limit", "threads"] + [f"{c.SHORT[k]} p50/p99/max ms" for k in ctx.kinds]
    trows: List[List[str]] = []
    lrows: List[List[str]] = []
    for (parser, limit, threads) in [(p, l, t) for p in PARSERS for l in LIMITS for t in THREADS]:
        key = lambda k: (parser, limit, threads, k)  # noqa: E731
        head = [parser, str(limit), str(threads)]
        row = head + [c.fmt_rate(rate[key(k)]) for k in ctx.kinds] + [str(errors[key(c.CP)])]
        if has_safe:
            s = rate[key(c.SAFE)]
            row += [c.fmt_ratio(c.ratio(s, rate[key(c.CP)])),
                    c.fmt_ratio(c.ratio(s, rate[key(c.BCP)]))]
        trows.append(row)
        lrows.append(head + ["/".join(c.fmt_ms(lats[key(k)][q]) for q in ("p50", "p99", "max"))
                             for k in ctx.kinds])

    section = c.Section(
        name=NAME, title="get_throughput: redis.Redis.get through each pool",
        about=(f"`redis.Redis(connection_pool=pool).get(key)` (100-byte value) in a loop per "
               f"thread, {ctx.settings.cell_seconds:g}s per pool per row in "
               f"{ctx.settings.rounds} alternating slices; parser `python` is "
               "`redis._parsers._RESP2Parser`, `hiredis` is `redis._parsers._HiredisParser`. "
               "Latency is per successful call; CP's \"Too many connections\" errors are "
               "counted, not timed."),
        tables=[(th, trows), (lh, lrows)],
        data={"rate": {"/".join(map(str, k)): v for k, v in rate.items()},
              "errors": {"/".join(map(str, k)): v for k, v in errors.items()},
              "latency": {"/".join(map(str, k)): v for k, v in lats.items()}},
    )
    if has_safe and 64 in THREADS and 1 in THREADS and 8 in LIMITS:
        for parser in PARSERS:
            s64 = (parser, 8, 64, c.SAFE)
            r_bcp = c.ratio(rate[s64], rate[(parser, 8, 64, c.BCP)])
            r_one = c.ratio(rate[s64], rate[(parser, 8, 1, c.CP)])
            p_safe, p_bcp = lats[s64]["p99"], lats[(parser, 8, 64, c.BCP)]["p99"]
            section.targets += [
                c.Target(f"GET 64 threads on 8 ({parser}): >= 3x BCP", c.fmt_ratio(r_bcp),
                         None if r_bcp is None else r_bcp >= 3),
                c.Target(f"GET 64 threads on 8 ({parser}): >= 0.9x CP 1-thread",
                         c.fmt_ratio(r_one), None if r_one is None else r_one >= 0.9),
                c.Target(f"GET 64 threads on 8 ({parser}): p99 < BCP p99",
                         f"{c.fmt_ms(p_safe)} ms vs {c.fmt_ms(p_bcp)} ms",
                         None if p_safe != p_safe or p_bcp != p_bcp else p_safe < p_bcp),
            ]
    return section
