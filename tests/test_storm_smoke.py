"""Smoke test: the incident replay runs a tiny scenario per pool and renders its tables (no timing assertions)."""

from __future__ import annotations

import io
import os
import sys

import pytest

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH_DIR)

import _storm_workers as sw  # noqa: E402
import storm  # noqa: E402

TINY = ["--workers", "12", "--max-connections", "4", "--maxclients", "8",
        "--outage", "0.3", "--kinds", "CP,Safe", "--modes", "per-worker"]


@pytest.fixture
def tiny_phases(monkeypatch):
    monkeypatch.setattr(storm, "QUICK", dict(warmup=0.2, pre=0.2, outage=0.3, post=0.6))


def test_storm_tiny_run(tiny_phases):
    args = storm.parse_args(TINY + ["--quick"])
    err = io.StringIO()  # not a TTY: plain progress lines
    results = storm.run(args, out=io.StringIO(), err=err)
    assert [r.kind for r in results] == [sw.CP, sw.SAFE]
    assert "outage" in err.getvalue() and "\r" not in err.getvalue()
    for r in results:
        assert r.hung == 0
        assert r.ops > 0
        assert r.accepted_after is not None and r.rejected_after is not None
        assert r.rejected_after >= 0 and r.accepted_after >= 0
    safe = results[1]
    # the budget is a count, not a timing: the server never saw more than it
    assert safe.peak_before is not None and safe.peak_before <= 4
    assert safe.rejected_after == 0
    out = io.StringIO()
    storm.report(results, out)
    text = out.getvalue()
    assert "ConnectionPool" in text and "SafeConnectionPool" in text
    assert "storm targets" in text
    md = storm.markdown(results, TINY, 1.0)
    assert "| conns rejected after restart |" in md and "redis-py" in md


def test_configs_cover_kinds_and_modes():
    cfgs = storm.configs(storm.parse_args([]))
    assert {(c.kind, c.mode) for c in cfgs} == {(k, m) for k in sw.KINDS for m in sw.MODES}
    assert all(c.workers == 200 and c.max_connections == 16 and c.maxclients == 64
               and c.outage == 2.0 for c in cfgs)
