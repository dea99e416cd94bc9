"""GIL: a CPU-bound Python thread's speed while 32 threads wait for a connection, vs no waiters."""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

import _common as c

NAME = "gil"
LIMIT = 8
WAITERS = 32
RETRY_SLEEP = 0.001  # CP never waits: its "waiters" retry every 1 ms, counting errors


def cpu_work(deadline: float) -> Dict[str, float]:
    """Pure-Python arithmetic in 1000-step chunks until ``deadline``."""
    now = time.perf_counter
    t0 = now()
    chunks = 0
    for _ in range(c.MAX_OPS_PER_THREAD):
        x = 0
        for i in range(1000):
            x += i
        chunks += 1
        if now() >= deadline:
            break
    return {"chunks": chunks, "elapsed": now() - t0}


def waiter(pool: Any, kind: str, stop: threading.Event, out: List[int]) -> None:
    """Wait for a connection (CP: retry until one comes), then give it back at once."""
    errors = 0
    for _ in range(c.MAX_OPS_PER_THREAD):
        try:
            conn = pool.get_connection()
        except Exception as exc:
            if not c.is_pool_exhausted(exc):
                raise
            errors += 1
            if stop.is_set() and kind != c.CP:
                break
            time.sleep(RETRY_SLEEP if kind == c.CP else 0)
            continue
        pool.release(conn)
        break
    out.append(errors)


def _settle(pool: Any, kind: str, seconds: float) -> None:
    """Give the waiters time to block; the safe pool says when all of them queue."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if kind == c.SAFE:
            try:
                if pool.stats().get("waiters", 0) >= WAITERS:
                    return
            except Exception:
                pass
        time.sleep(0.005)


def measure_with_waiters(ctx: c.Context, kind: str, seconds: float) -> Dict[str, float]:
    pool = c.make_pool(ctx, kind, LIMIT)
    stop = threading.Event()
    errors: List[int] = []
    threads: List[threading.Thread] = []
    held = []
    try:
        held = [pool.get_connection() for _ in range(LIMIT)]
        threads = [threading.Thread(target=waiter, args=(pool, kind, stop, errors), daemon=True)
                   for _ in range(WAITERS)]
        for t in threads:
            t.start()
        _settle(pool, kind, 0.05 if ctx.settings.quick else 0.3)
        work = cpu_work(time.perf_counter() + seconds)
    finally:
        stop.set()
        for conn in held:
            pool.release(conn)
        for t in threads:
            t.join(timeout=ctx.settings.wait_timeout + c.JOIN_SLACK)
            if t.is_alive():
                raise RuntimeError("gil benchmark waiter still blocked after the connections came back")
        c.close_pool(pool)
    work["errors"] = sum(errors)
    return work


def run(ctx: c.Context) -> c.Section:
    ctx.log(f"  {NAME}: CPU thread vs {WAITERS} blocked waiters")
    acc: Dict[str, Dict[str, float]] = {
        k: {"chunks": 0, "elapsed": 0.0, "base_chunks": 0, "base_elapsed": 0.0, "errors": 0}
        for k in ctx.kinds}

    def one(kind: str, _round: int) -> None:
        base = cpu_work(time.perf_counter() + ctx.settings.slice_seconds)
        loaded = measure_with_waiters(ctx, kind, ctx.settings.slice_seconds)
        a = acc[kind]
        a["base_chunks"] += base["chunks"]
        a["base_elapsed"] += base["elapsed"]
        for k in ("chunks", "elapsed", "errors"):
            a[k] += loaded[k]
    c.alternate(ctx, one)

    speed = {k: c.ratio(a["chunks"] / a["elapsed"], a["base_chunks"] / a["base_elapsed"])
             for k, a in acc.items()}
    headers = ["pool", "CPU rate alone (k chunks/s)", "with 32 waiters", "relative speed",
               "waiter errors"]
    rows = [[c.SHORT[k], f"{a['base_chunks'] / a['base_elapsed'] / 1e3:.1f}",
             f"{a['chunks'] / a['elapsed'] / 1e3:.1f}", c.fmt_ratio(speed[k]), str(int(a["errors"]))]
            for k, a in acc.items()]
    section = c.Section(
        name=NAME, title="gil: CPU-bound thread while 32 threads wait for a connection",
        about=(f"{LIMIT} connections are checked out and held; {WAITERS} threads call "
               "`get_connection()`; the main thread runs pure-Python arithmetic. Its rate is "
               "compared with an adjacent run without waiters "
               f"({ctx.settings.cell_seconds:g}s each, {ctx.settings.rounds} alternating slices). "
               "CP cannot wait: its waiters retry every 1 ms and the errors are counted."),
        tables=[(headers, rows)],
        data={"speed": speed, "errors": {k: int(a["errors"]) for k, a in acc.items()}},
    )
    if c.SAFE in ctx.kinds and speed[c.SAFE] is not None:
        section.targets.append(c.Target(
            "CPU thread at close to full speed while 32 wait (>= 0.9x alone)",
            c.fmt_ratio(speed[c.SAFE]), speed[c.SAFE] >= 0.9))
    return section
