"""Shared benchmark plumbing: server, the three pools, bounded thread runs, stats, tables, machine info."""

from __future__ import annotations

import gc
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from redis_safepool.testing import RedisServer

CP = "ConnectionPool"
BCP = "BlockingConnectionPool"
SAFE = "SafeConnectionPool"
KINDS: Tuple[str, ...] = (CP, BCP, SAFE)
SHORT = {CP: "CP", BCP: "BCP", SAFE: "Safe"}

BENCH_KEY = "safepool:bench:key"
BENCH_VALUE = b"v" * 100
MAX_OPS_PER_THREAD = 50_000_000  # hard bound on every worker loop besides its deadline
JOIN_SLACK = 30.0                # seconds a worker may overrun its deadline before we call it hung


def safe_pool_class() -> Tuple[Optional[type], str]:
    """(SafeConnectionPool, "") when the core is built, else (None, why not)."""
    try:
        import redis_safepool
        cls = getattr(redis_safepool, "SafeConnectionPool", None)
        if cls is None:
            from redis_safepool.pool import SafeConnectionPool as cls  # noqa: N813
        return cls, ""
    except Exception as exc:  # ImportError before the core lands, build errors after
        return None, f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- context


@dataclass
class Settings:
    """How long each measurement cell runs and how often the pools alternate."""

    cell_seconds: float = 1.5   # per pool per cell, summed over rounds
    rounds: int = 4             # alternations of the three pools per cell (evens out noise)
    warmup_seconds: float = 0.05
    wait_timeout: float = 10.0  # pool timeout for BCP/Safe; far above any legitimate wait
    quick: bool = False

    @classmethod
    def quick_mode(cls) -> "Settings":
        return cls(cell_seconds=0.06, rounds=1, warmup_seconds=0.01, quick=True)

    @property
    def slice_seconds(self) -> float:
        return self.cell_seconds / self.rounds


@dataclass
class Context:
    """What every benchmark gets: a live server, the settings and the pools available."""

    server: Any
    settings: Settings
    kinds: Tuple[str, ...] = KINDS
    safe_error: str = ""
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port


class BenchServer:
    """A throwaway redis-server (or an existing one via SAFEPOOL_BENCH_PORT) with the bench key set."""

    def __init__(self) -> None:
        port = os.environ.get("SAFEPOOL_BENCH_PORT")
        self._owned = None if port else RedisServer()
        self.host = "127.0.0.1"
        self.port = int(port) if port else self._owned.port

    def __enter__(self) -> "BenchServer":
        if self._owned is not None:
            self._owned.start()
        r = redis.Redis(host=self.host, port=self.port, socket_timeout=5)
        r.set(BENCH_KEY, BENCH_VALUE)
        r.close()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owned is not None:
            self._owned.stop()


def make_context(server: Any, settings: Settings, only_redis_py: bool = False) -> Context:
    cls, why = safe_pool_class()
    kinds = KINDS if cls is not None and not only_redis_py else (CP, BCP)
    if cls is not None:
        try:  # every cell makes a fresh pool on purpose: silence the pool-per-request warning
            from redis_safepool import observe
            observe.set_thresholds(pool_warn_threshold=None)
        except (ImportError, AttributeError, TypeError):
            pass
    return Context(server=server, settings=settings, kinds=kinds,
                   safe_error=why if cls is None else "")


# --------------------------------------------------------------------------- pools


def _pool_classes(aio: bool) -> Dict[str, Callable[[], type]]:
    if aio:
        import redis.asyncio as ra

        def safe_async() -> type:
            from redis_safepool.asyncio import SafeConnectionPool
            return SafeConnectionPool
        return {CP: lambda: ra.ConnectionPool, BCP: lambda: ra.BlockingConnectionPool,
                SAFE: safe_async}

    def safe_sync() -> type:
        cls, why = safe_pool_class()
        if cls is None:
            raise RuntimeError(f"SafeConnectionPool unavailable: {why}")
        return cls
    return {CP: lambda: redis.ConnectionPool, BCP: lambda: redis.BlockingConnectionPool,
            SAFE: safe_sync}


def make_pool(ctx: Context, kind: str, max_connections: int, aio: bool = False, **kwargs: Any):
    """A fresh pool of ``kind`` for the bench server (``aio``: redis.asyncio's and the
    asyncio SafeConnectionPool); every socket op is bounded."""
    kw: Dict[str, Any] = dict(host=ctx.host, port=ctx.port, socket_timeout=5,
                              socket_connect_timeout=5, max_connections=max_connections)
    kw.update(kwargs)
    classes = _pool_classes(aio)
    if kind not in classes:
        raise ValueError(f"unknown pool kind {kind!r}")
    cls = classes[kind]()
    if kind == CP:
        return cls(**kw)
    if kind == BCP:
        return cls(timeout=ctx.settings.wait_timeout, **kw)
    import redis_safepool as sp
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool = cls(timeout=ctx.settings.wait_timeout, **kw)
    conflict = getattr(sp, "BudgetConflictWarning", RuntimeWarning)
    if any(issubclass(w.category, conflict) for w in caught) and hasattr(sp, "configure"):
        # The endpoint outlived an earlier cell's pool: set this cell's limit explicitly.
        sp.configure(pool, max_connections=max_connections)
    return pool


def close_pool(pool: Any) -> None:
    """Drop every connection of ``pool`` so the next cell starts from an empty budget."""
    try:
        if hasattr(pool, "close"):
            pool.close()
        else:
            pool.disconnect()
    except Exception:
        pool.disconnect()
    gc.collect()


def is_pool_exhausted(exc: BaseException) -> bool:
    """True for the "no connection for you" errors we count instead of crashing."""
    if isinstance(exc, getattr(redis.exceptions, "MaxConnectionsError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RedisConnectionError) and (
        "Too many connections" in text or "No connection available" in text
        or "waiting for a connection" in text)


def prewarm(pool: Any, n: int) -> None:
    """Open ``n`` live connections (checked out together, then released)."""
    conns = []
    try:
        for _ in range(n):
            conns.append(pool.get_connection())
    finally:
        for c in conns:
            pool.release(c)


async def prewarm_async(pool: Any, n: int) -> None:
    """``prewarm`` for an asyncio pool."""
    conns = []
    try:
        for _ in range(n):
            conns.append(await pool.get_connection())
    finally:
        for c in conns:
            await pool.release(c)


# --------------------------------------------------------------------------- threads


@dataclass
class ThreadRun:
    """Per-thread results of one bounded multi-thread run."""

    results: List[Any]
    elapsed: float


def run_threads(n: int, body: Callable[[int, float], Any], seconds: float) -> ThreadRun:
    """Start ``n`` threads together; each runs ``body(index, deadline)`` and returns its result.

    ``body`` must stop at ``deadline`` (perf_counter seconds) and after at most
    MAX_OPS_PER_THREAD iterations. A worker exception is re-raised here.
    """
    barrier = threading.Barrier(n + 1)
    box: Dict[str, float] = {}
    results: List[Any] = [None] * n
    finished: List[float] = [0.0] * n
    failures: List[BaseException] = []

    def target(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = body(i, box["deadline"])
        except BaseException as exc:  # surfaced in the main thread below
            failures.append(exc)
        finally:
            finished[i] = time.perf_counter()

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    box["deadline"] = start + seconds
    barrier.wait(timeout=30)
    for t in threads:
        t.join(timeout=seconds + JOIN_SLACK)
        if t.is_alive():
            raise RuntimeError(f"benchmark worker still running {JOIN_SLACK:.0f}s past its deadline")
    if failures:
        raise failures[0]
    return ThreadRun(results=results, elapsed=max(finished) - start)


def alternate(ctx: Context, run_one: Callable[[str, int], None],
              kinds: Optional[Sequence[str]] = None) -> None:
    """Call ``run_one(kind, round)`` for every pool kind (``ctx.kinds`` unless given),
    rotating the order each round."""
    kinds = list(ctx.kinds if kinds is None else kinds)
    for r in range(ctx.settings.rounds):
        k = r % len(kinds)
        for kind in kinds[k:] + kinds[:k]:
            run_one(kind, r)


# --------------------------------------------------------------------------- numbers


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 <= q <= 100); nan when empty."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(round(q / 100.0 * len(sorted_values) + 0.5))))
    return sorted_values[rank - 1]


def latency_summary(samples: Sequence[float]) -> Dict[str, float]:
    """p50/p99/max of latencies given in seconds."""
    s = sorted(samples)
    return {"p50": percentile(s, 50), "p99": percentile(s, 99),
            "max": s[-1] if s else float("nan")}


def spread_summary(per_thread: Sequence[int]) -> Dict[str, float]:
    """How evenly work was shared: min/median/max, coefficient of variation, Jain's index."""
    vals = list(per_thread)
    mean = statistics.fmean(vals) if vals else 0.0
    sq = sum(v * v for v in vals)
    return {
        "min": min(vals) if vals else 0,
        "median": statistics.median(vals) if vals else 0,
        "max": max(vals) if vals else 0,
        "cv": statistics.pstdev(vals) / mean if mean else float("nan"),
        "jain": (sum(vals) ** 2) / (len(vals) * sq) if sq else float("nan"),
        "starving": sum(1 for v in vals if v < 0.1 * mean) if mean else len(vals),
    }


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b != b or a != a or b <= 0:
        return None
    return a / b


def fmt_ratio(r: Optional[float]) -> str:
    return "n/a" if r is None else f"{r:.2f}x"


def fmt_rate(x: Optional[float]) -> str:
    if x is None or x != x:
        return "n/a"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def fmt_ms(seconds: Optional[float]) -> str:
    if seconds is None or seconds != seconds:
        return "n/a"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


# --------------------------------------------------------------------------- reports


@dataclass
class Target:
    """One of the pool's benchmark targets: what was measured and whether it is met (None: not measurable)."""

    name: str
    measured: str
    met: Optional[bool]

    @property
    def flag(self) -> str:
        return "n/a" if self.met is None else "MET" if self.met else "NOT MET"


@dataclass
class Section:
    """One benchmark's results, rendered to the terminal and to BENCHMARKS.md."""

    name: str
    title: str
    about: str
    tables: List[Tuple[List[str], List[List[str]]]] = field(default_factory=list)
    targets: List[Target] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    data: Dict[str, Any] = field(default_factory=dict)  # raw numbers, for tests and tooling

    def markdown(self) -> str:
        out = [f"### {self.title}", "", self.about, ""]
        for headers, rows in self.tables:
            out.append(markdown_table(headers, rows))
            out.append("")
        if self.targets:
            out.append(markdown_table(["target", "measured", "status"],
                                      [[t.name, t.measured, f"**{t.flag}**"] for t in self.targets]))
            out.append("")
        out += [f"- {n}" for n in self.notes]
        return "\n".join(out).rstrip() + "\n"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def _cmd_output(argv: List[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""


def machine_info() -> Dict[str, str]:
    """Machine, versions and source revision, for the header of BENCHMARKS.md."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import hiredis
        hiredis_version = getattr(hiredis, "__version__", "installed")
    except ImportError:
        hiredis_version = "not installed"
    import redis_safepool
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rev = _cmd_output(["git", "-C", root, "rev-parse", "--short", "HEAD"])
    server = _cmd_output(["redis-server", "--version"]).split(" sha=")[0]
    cls, why = safe_pool_class()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu})",
        "os": f"{platform.system()} {platform.release()}",
        "load average at the end": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "redis-py": redis.__version__,
        "hiredis": hiredis_version,
        "redis-server": server or "unknown",
        "redis-safepool": f"{redis_safepool.__version__} @ {rev or 'unknown'}"
                          + ("" if cls is not None else f" (SafeConnectionPool unavailable: {why})"),
    }


def cpu_seconds() -> float:
    """User+system CPU time of this process (all threads) so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
