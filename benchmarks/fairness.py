"""Fairness: 64 threads sharing 8 connections; spread of per-thread completed ops and the max wait."""

from __future__ import annotations

import time
from typing import Any, Dict, List

import _common as c

NAME = "fairness"
LIMIT = 8
THREADS = 64


def checkout_get_loop(pool: Any, deadline: float) -> Dict[str, Any]:
    """Checkout (timed), GET on the raw connection, release; until ``deadline``."""
    get, rel, key, now = pool.get_connection, pool.release, c.BENCH_KEY, time.perf_counter
    ops = errors = 0
    max_wait = 0.0
    for _ in range(c.MAX_OPS_PER_THREAD):
        t0 = now()
        try:
            conn = get()
        except Exception as exc:
            if not c.is_pool_exhausted(exc):
                raise
            errors += 1
        else:
            max_wait = max(max_wait, now() - t0)
            try:
                conn.send_command("GET", key)
                conn.read_response()
            finally:
                rel(conn)
            ops += 1
        if now() >= deadline:
            break
    return {"ops": ops, "errors": errors, "max_wait": max_wait}


def measure(ctx: c.Context, kind: str, seconds: float) -> Dict[str, Any]:
    pool = c.make_pool(ctx, kind, LIMIT)
    try:
        c.prewarm(pool, LIMIT)
        body = lambda i, deadline: checkout_get_loop(pool, deadline)  # noqa: E731
        c.run_threads(THREADS, body, ctx.settings.warmup_seconds)
        run = c.run_threads(THREADS, body, seconds)
    finally:
        c.close_pool(pool)
    spread = c.spread_summary([r["ops"] for r in run.results])
    spread.update(ops=sum(r["ops"] for r in run.results),
                  errors=sum(r["errors"] for r in run.results),
                  max_wait=max(r["max_wait"] for r in run.results), elapsed=run.elapsed)
    return spread


def run(ctx: c.Context) -> c.Section:
    ctx.log(f"  {NAME}: {THREADS} threads on {LIMIT} connections")
    rounds: Dict[str, List[Dict[str, Any]]] = {k: [] for k in ctx.kinds}
    c.alternate(ctx, lambda kind, _r: rounds[kind].append(
        measure(ctx, kind, ctx.settings.slice_seconds)))

    # Report the least fair slice of each pool, the total errors and the worst wait.
    worst: Dict[str, Dict[str, Any]] = {}
    for kind, slices in rounds.items():
        w = dict(min(slices, key=lambda s: s["jain"] if s["jain"] == s["jain"] else -1))
        w["errors"] = sum(s["errors"] for s in slices)
        w["max_wait"] = max(s["max_wait"] for s in slices)
        w["rate"] = sum(s["ops"] for s in slices) / sum(s["elapsed"] for s in slices)
        worst[kind] = w

    headers = ["pool", "ops/s", "per-thread ops min/median/max", "CV", "Jain index",
               "starving threads", "max wait ms", "errors"]
    rows = [[c.SHORT[k], c.fmt_rate(w["rate"]), f"{w['min']}/{w['median']:g}/{w['max']}",
             f"{w['cv']:.2f}", f"{w['jain']:.3f}", str(w["starving"]),
             c.fmt_ms(w["max_wait"] if w["ops"] else None), str(w["errors"])]
            for k, w in worst.items()]
    section = c.Section(
        name=NAME, title="fairness: 64 threads on 8 connections",
        about=(f"Each thread: timed `get_connection()`, `GET` on the raw connection, `release()`; "
               f"{ctx.settings.cell_seconds:g}s per pool in {ctx.settings.rounds} alternating "
               "slices, least fair slice shown. CV = stdev/mean of per-thread ops; Jain index "
               "1.0 = perfectly even; a thread is *starving* below 10% of the mean. CP's "
               "exhausted-pool errors are counted (the thread retries at once)."),
        tables=[(headers, rows)],
        data={"worst": worst},
    )
    if c.SAFE in ctx.kinds:
        s = worst[c.SAFE]
        section.targets.append(c.Target(
            "FIFO: no starving thread with 64 threads on 8",
            f"{s['starving']} starving, Jain {s['jain']:.3f}, max wait {c.fmt_ms(s['max_wait'])} ms",
            s["starving"] == 0))
    return section
