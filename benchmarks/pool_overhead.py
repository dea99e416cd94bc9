"""Checkout+release pairs/s of the three pools (live connections, limit 8, 1/4/16/64 threads)."""

from __future__ import annotations

import argparse
import resource
import time
from typing import Any, Dict, List

import _common as c

NAME = "pool_overhead"
LIMIT = 8
THREADS = (1, 4, 16, 64)


def pair_loop(pool: Any, deadline: float) -> Dict[str, int]:
    """Checkout+release until ``deadline``; exhausted-pool errors are counted, not raised."""
    get, rel, now = pool.get_connection, pool.release, time.perf_counter
    pairs = errors = 0
    for i in range(c.MAX_OPS_PER_THREAD):
        try:
            conn = get()
        except Exception as exc:
            if not c.is_pool_exhausted(exc):
                raise
            errors += 1
        else:
            rel(conn)
            pairs += 1
        if not (i & 7) and now() >= deadline:
            break
    return {"pairs": pairs, "errors": errors}


def measure(ctx: c.Context, kind: str, threads: int, seconds: float) -> Dict[str, float]:
    pool = c.make_pool(ctx, kind, LIMIT)
    try:
        c.prewarm(pool, min(threads, LIMIT))
        body = lambda i, deadline: pair_loop(pool, deadline)  # noqa: E731
        c.run_threads(threads, body, ctx.settings.warmup_seconds)
        cpu0 = c.cpu_seconds()
        run = c.run_threads(threads, body, seconds)
        cpu = c.cpu_seconds() - cpu0
    finally:
        c.close_pool(pool)
    return {"pairs": sum(r["pairs"] for r in run.results),
            "errors": sum(r["errors"] for r in run.results), "elapsed": run.elapsed, "cpu": cpu}


def readiness_check(ctx: c.Context, kind: str) -> bool:
    """A connection released with an unread reply must come back clean (checked, not trusted)."""
    pool = c.make_pool(ctx, kind, 1)
    try:
        conn = pool.get_connection()
        conn.send_command("ECHO", "stale")
        time.sleep(0.02)  # let the reply arrive unread
        pool.release(conn)
        conn = pool.get_connection()
        try:
            conn.send_command("ECHO", "fresh")
            return conn.read_response() == b"fresh"
        finally:
            pool.release(conn)
    finally:
        c.close_pool(pool)


def run(ctx: c.Context) -> c.Section:
    totals: Dict[tuple, Dict[str, float]] = {}
    for threads in THREADS:
        ctx.log(f"  {NAME}: {threads} threads")

        def one(kind: str, _round: int) -> None:
            m = measure(ctx, kind, threads, ctx.settings.slice_seconds)
            t = totals.setdefault((kind, threads),
                                  {"pairs": 0, "errors": 0, "elapsed": 0.0, "cpu": 0.0})
            for k in t:
                t[k] += m[k]
        c.alternate(ctx, one)

    rate = {key: v["pairs"] / v["elapsed"] for key, v in totals.items()}
    cpu_us = {key: 1e6 * v["cpu"] / v["pairs"] if v["pairs"] else None for key, v in totals.items()}
    errors = {key: int(v["errors"]) for key, v in totals.items()}
    headers = ["threads"] + [f"{c.SHORT[k]} pairs/s" for k in ctx.kinds] + ["CP errors"]
    headers.append("CPU us/pair " + "/".join(c.SHORT[k] for k in ctx.kinds))
    if c.SAFE in ctx.kinds:
        headers += ["Safe/CP", "Safe/BCP"]
    rows: List[List[str]] = []
    for threads in THREADS:
        row = [str(threads)] + [c.fmt_rate(rate[(k, threads)]) for k in ctx.kinds]
        row.append(str(errors[(c.CP, threads)]))
        row.append(" / ".join("n/a" if cpu_us[(k, threads)] is None else f"{cpu_us[(k, threads)]:.2f}"
                              for k in ctx.kinds))
        if c.SAFE in ctx.kinds:
            s = rate[(c.SAFE, threads)]
            row += [c.fmt_ratio(c.ratio(s, rate[(c.CP, threads)])),
                    c.fmt_ratio(c.ratio(s, rate[(c.BCP, threads)]))]
        rows.append(row)

    ready = {k: readiness_check(ctx, k) for k in ctx.kinds}
    section = c.Section(
        name=NAME, title="pool_overhead: checkout+release pairs/s",
        about=(f"`pool.get_connection()` + `pool.release(conn)` in a tight loop, limit {LIMIT}, "
               f"live connections (pre-opened), {ctx.settings.cell_seconds:g}s per pool per row "
               f"in {ctx.settings.rounds} alternating slices. redis-py's `ConnectionPool` raises "
               "\"Too many connections\" when more threads than connections: those are counted "
               "as errors, not pairs. *CPU us/pair* is process CPU time (all threads, user+sys) "
               "per pair: less sensitive to other load on the machine than pairs/s."),
        tables=[(headers, rows)],
        data={"rate": {f"{k}/{t}": v for (k, t), v in rate.items()},
              "errors": {f"{k}/{t}": v for (k, t), v in errors.items()},
              "cpu_us": {f"{k}/{t}": v for (k, t), v in cpu_us.items()},
              "ready": ready},
    )
    section.notes.append("readiness check (a connection released with an unread reply comes "
                         "back clean): " + ", ".join(f"{c.SHORT[k]} {'ok' if v else 'FAILED'}"
                                                    for k, v in ready.items()))
    if c.SAFE in ctx.kinds and 1 in THREADS and 64 in THREADS:
        r1 = c.ratio(rate[(c.SAFE, 1)], rate[(c.CP, 1)])
        r64 = c.ratio(rate[(c.SAFE, 64)], rate[(c.BCP, 64)])
        section.targets += [
            c.Target("checkout+release, 1 thread: >= 10x CP", c.fmt_ratio(r1),
                     None if r1 is None else r1 >= 10),
            c.Target("checkout+release, 64 threads on 8: >= 10x BCP", c.fmt_ratio(r64),
                     None if r64 is None else r64 >= 10),
            c.Target("per-checkout readiness check kept (unread reply detected)",
                     "ok" if ready[c.SAFE] else "stale reply handed out", ready[c.SAFE]),
        ]
    return section


def counted_loop(pool: Any, n: int) -> int:
    """Exactly ``n`` checkout+release attempts; returns how many hit an exhausted pool."""
    get, rel = pool.get_connection, pool.release
    errors = 0
    for _ in range(n):
        try:
            conn = get()
        except Exception as exc:
            if not c.is_pool_exhausted(exc):
                raise
            errors += 1
        else:
            rel(conn)
    return errors


def main() -> None:
    """`python benchmarks/pool_overhead.py --loop KIND N [--threads T]`: N pairs for callgrind/perf."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--loop", choices=c.KINDS, required=True)
    p.add_argument("n", type=int)
    p.add_argument("--threads", type=int, default=1, help="split the N pairs over T threads")
    p.add_argument("--port", type=int, required=True, help="a running redis-server on 127.0.0.1")
    a = p.parse_args()

    class _Server:
        host, port = "127.0.0.1", a.port
    ctx = c.Context(server=_Server, settings=c.Settings())
    pool = c.make_pool(ctx, a.loop, LIMIT)
    c.prewarm(pool, min(a.threads, LIMIT))
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    if a.threads == 1:
        errors = counted_loop(pool, a.n)
    else:
        run = c.run_threads(a.threads, lambda i, _d: counted_loop(pool, a.n // a.threads), 600.0)
        errors = sum(run.results)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(f"{a.loop}: {a.n} pairs on {a.threads} threads in {dt:.3f}s "
          f"(user {r1.ru_utime - r0.ru_utime:.3f}s, sys {r1.ru_stime - r0.ru_stime:.3f}s, "
          f"{errors} errors)")
    c.close_pool(pool)


if __name__ == "__main__":
    main()
