"""Checkout+release pairs/s of the safe pool with a process budget and with a host budget, same run."""

from __future__ import annotations

import os
from typing import Any, Dict, List

import _common as c
from pool_overhead import pair_loop

NAME = "host_scope"
LIMIT = 8
THREADS = (1, 4)
SCOPES = ("process", "host")


def _segment_of(pool: Any) -> str:
    from redis_safepool._pool_base import host_segment_name
    from redis_safepool._endpoint_keys import endpoint_of

    return "/dev/shm" + host_segment_name(endpoint_of(pool.connection_class,
                                                      pool.connection_kwargs)[0])


def make_scoped_pool(ctx: c.Context, scope: str) -> Any:
    """A safe pool of ``scope``; each scope on its own db, so each is its endpoint's first pool."""
    return c.make_pool(ctx, c.SAFE, LIMIT, scope=scope, db=SCOPES.index(scope) + 2)


def measure(ctx: c.Context, scope: str, threads: int, seconds: float) -> Dict[str, float]:
    pool = make_scoped_pool(ctx, scope)
    try:
        c.prewarm(pool, min(threads, LIMIT))
        body = lambda i, deadline: pair_loop(pool, deadline)  # noqa: E731
        c.run_threads(threads, body, ctx.settings.warmup_seconds)
        cpu0 = c.cpu_seconds()
        run = c.run_threads(threads, body, seconds)
        cpu = c.cpu_seconds() - cpu0
        actual = pool.stats()["scope"]
    finally:
        segment = _segment_of(pool) if scope == "host" else None
        c.close_pool(pool)
    if segment and os.path.exists(segment):
        os.unlink(segment)
    return {"pairs": sum(r["pairs"] for r in run.results), "elapsed": run.elapsed, "cpu": cpu,
            "scope_ok": float(actual == scope)}


def run(ctx: c.Context) -> c.Section:
    if c.SAFE not in ctx.kinds:
        return c.Section(name=NAME, title="host_scope: not run", about=ctx.safe_error)
    totals: Dict[tuple, Dict[str, float]] = {}
    for threads in THREADS:
        ctx.log(f"  {NAME}: {threads} threads")
        for r in range(ctx.settings.rounds):
            order = SCOPES if r % 2 == 0 else SCOPES[::-1]
            for scope in order:
                m = measure(ctx, scope, threads, ctx.settings.slice_seconds)
                t = totals.setdefault((scope, threads),
                                      {"pairs": 0, "elapsed": 0.0, "cpu": 0.0, "scope_ok": 1.0})
                for k in ("pairs", "elapsed", "cpu"):
                    t[k] += m[k]
                t["scope_ok"] = min(t["scope_ok"], m["scope_ok"])
    rate = {key: v["pairs"] / v["elapsed"] for key, v in totals.items()}
    cpu_us = {key: 1e6 * v["cpu"] / v["pairs"] if v["pairs"] else None for key, v in totals.items()}
    headers = ["threads", "process pairs/s", "host pairs/s", "host/process",
               "CPU us/pair process/host"]
    rows: List[List[str]] = []
    for threads in THREADS:
        p, h = rate[("process", threads)], rate[("host", threads)]
        rows.append([str(threads), c.fmt_rate(p), c.fmt_rate(h), c.fmt_ratio(c.ratio(h, p)),
                     " / ".join("n/a" if cpu_us[(s, threads)] is None
                                else f"{cpu_us[(s, threads)]:.2f}" for s in SCOPES)])
    section = c.Section(
        name=NAME, title="host_scope: checkout+release, process budget vs host budget",
        about=(f"`pool.get_connection()` + `pool.release(conn)` in a tight loop on "
               f"`SafeConnectionPool(scope=...)`, limit {LIMIT}, live connections, "
               f"{ctx.settings.cell_seconds:g}s per scope per row in {ctx.settings.rounds} "
               "alternating slices, one process. A host budget costs its atomic claims only "
               "when a slot is made or given back, and a look at the line on release."),
        tables=[(headers, rows)],
        data={"rate": {f"{s}/{t}": v for (s, t), v in rate.items()},
              "cpu_us": {f"{s}/{t}": v for (s, t), v in cpu_us.items()},
              "scope_ok": all(v["scope_ok"] == 1.0 for v in totals.values())},
    )
    r1 = c.ratio(rate[("host", 1)], rate[("process", 1)])
    section.targets.append(
        c.Target("host-scope checkout+release, 1 thread: within 2x of process scope",
                 c.fmt_ratio(r1), None if r1 is None else r1 >= 0.5))
    return section
