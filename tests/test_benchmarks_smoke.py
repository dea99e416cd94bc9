"""Smoke test: every benchmark runs for a fraction of a second and yields numbers (no timing assertions)."""

from __future__ import annotations

import math
import os
import sys

import pytest

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH_DIR)

import _common as c  # noqa: E402
import async_throughput  # noqa: E402
import fairness  # noqa: E402
import get_throughput  # noqa: E402
import gil  # noqa: E402
import host_scope  # noqa: E402
import pool_overhead  # noqa: E402
import run as bench_run  # noqa: E402


def _have_redis_server() -> bool:
    try:
        from redis_safepool.testing import redis_server_path
        redis_server_path()
        return True
    except RuntimeError:
        return False


pytestmark = pytest.mark.skipif(not _have_redis_server(), reason="redis-server not installed")

TINY = dict(cell_seconds=0.02, rounds=1, warmup_seconds=0.005, wait_timeout=5.0, quick=True)


@pytest.fixture(scope="module")
def ctx():
    with c.BenchServer() as server:
        yield c.make_context(server, c.Settings(**TINY))


def _numbers(values):
    values = list(values)
    assert values
    for v in values:
        assert isinstance(v, float) and not math.isnan(v) and v >= 0
    return values


def _int_counts(values):
    values = list(values)
    assert values
    assert all(type(v) is int and v >= 0 for v in values)


def test_pool_overhead(ctx, monkeypatch):
    monkeypatch.setattr(pool_overhead, "THREADS", (1, 64))
    section = pool_overhead.run(ctx)
    rates = section.data["rate"]
    assert set(rates) == {f"{k}/{t}" for k in ctx.kinds for t in (1, 64)}
    _numbers(rates.values())
    _int_counts(section.data["errors"].values())
    assert "pairs/s" in section.markdown()


def test_host_scope(ctx):
    section = host_scope.run(ctx)
    rates = section.data["rate"]
    assert set(rates) == {f"{s}/{t}" for s in ("process", "host") for t in host_scope.THREADS}
    _numbers(rates.values())
    assert section.data["scope_ok"]  # each pool ran on the budget it asked for
    assert "host/process" in section.markdown()


def test_get_throughput(ctx, monkeypatch):
    monkeypatch.setattr(get_throughput, "THREADS", (1, 16))
    monkeypatch.setattr(get_throughput, "LIMITS", (8,))
    section = get_throughput.run(ctx)
    assert len(section.data["rate"]) == len(get_throughput.PARSERS) * 2 * len(ctx.kinds)
    _numbers(section.data["rate"].values())
    _int_counts(section.data["errors"].values())
    for lat in section.data["latency"].values():
        assert set(lat) == {"p50", "p99", "max"}


def test_fairness(ctx):
    section = fairness.run(ctx)
    worst = section.data["worst"]
    assert set(worst) == set(ctx.kinds)
    for w in worst.values():
        _int_counts([w["errors"], w["starving"], w["min"], w["max"]])
        _numbers([w["rate"], w["max_wait"]])


def test_gil(ctx):
    section = gil.run(ctx)
    _numbers(v for v in section.data["speed"].values())
    _int_counts(section.data["errors"].values())


def test_async_throughput(ctx, monkeypatch):
    monkeypatch.setattr(async_throughput, "TASKS", (1, 64))
    monkeypatch.setattr(async_throughput, "PAIR_TASKS", (1, 64))
    monkeypatch.setattr(async_throughput, "WORK_TASKS", (1, 64))
    monkeypatch.setattr(async_throughput, "WORK_CALLS", 64)
    section = async_throughput.run(ctx)
    kinds = [k for k in (c.BCP, c.SAFE) if k in ctx.kinds]
    assert set(section.data["rate"]) == {f"{p}/{t}/{k}" for p in async_throughput.PARSERS
                                         for t in (1, 64) for k in kinds} | {
        f"{p}/1/{async_throughput.NO_POOL}" for p in async_throughput.PARSERS}
    _numbers(section.data["rate"].values())
    _numbers(section.data["pairs"].values())
    cpu = list(section.data["cpu_us_per_op"].values())  # nan: no call ended inside a tiny slice
    assert cpu and all(isinstance(v, float) and (math.isnan(v) or v >= 0) for v in cpu)
    _numbers(section.data["calls_per_get"].values())
    for lat in section.data["latency"].values():
        assert set(lat) == {"p50", "p99", "max"}
    assert "pairs/s" in section.markdown()
    assert "no pool/BCP" in section.markdown()


def test_readiness_check_runs(ctx):
    for kind in ctx.kinds:
        assert isinstance(pool_overhead.readiness_check(ctx, kind), bool)


def test_run_writes_results_block(tmp_path, monkeypatch, capsys):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\nkept prose\n\n<!-- bench:results:begin -->\nold\n"
                   "<!-- bench:results:end -->\n\nkept tail\n")
    monkeypatch.setattr(pool_overhead, "THREADS", (1, 64))
    assert bench_run.main(["--quick", "--seconds", "0.02", "--only", "pool_overhead",
                           "--write", str(out)]) == 0
    text = out.read_text()
    assert "kept prose" in text and "kept tail" in text and "\nold\n" not in text
    assert "pairs/s" in text and "redis-py" in text
    assert "pool_overhead" in capsys.readouterr().out


def test_helpers():
    assert c.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert c.percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert math.isnan(c.percentile([], 99))
    s = c.spread_summary([10, 10, 10, 0])
    assert s["starving"] == 1 and 0 < s["jain"] < 1
    assert c.fmt_ratio(c.ratio(10.0, 4.0)) == "2.50x" and c.fmt_ratio(c.ratio(1.0, 0.0)) == "n/a"
