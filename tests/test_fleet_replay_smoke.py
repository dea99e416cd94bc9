"""Smoke test: the fleet replay runs a tiny fleet per pool through a restart and renders its tables (no timing assertions)."""

from __future__ import annotations

import os
import sys

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH_DIR)

import _fleet_workers as fw  # noqa: E402
import fleet  # noqa: E402

TINY = ["--hosts", "3", "--threads", "3", "--max-connections", "3", "--maxclients", "12",
        "--warmup", "0.3", "--steady", "0.6", "--down", "0.2", "--after", "0.8",
        "--kinds", "CP,Safe", "--baseline-maxclients", "40"]


def test_fleet_tiny_run():
    args = fleet.parse_args(TINY)
    logged = []
    section = fleet.run(args, logged.append)
    results = section.data["results"]
    assert [r.kind for r in results] == [fw.CP, fw.SAFE]
    assert section.data["baseline"].maxclients == 40
    for r in results:
        assert set(r.phases) == {"steady", "after"}
        for phase in r.phases.values():
            assert len(phase.host_ops) == 3 and phase.seconds > 0
    safe = results[1].phases["steady"]
    # counts, not timings: 9 connections wanted of a server that keeps 4 of 12 free
    assert safe.rejected == 0 and safe.operator_refused == 0
    assert all(ops > 0 for ops in safe.host_ops)
    text = section.markdown()
    assert "peak fleet" in text and "SafeConnectionPool" in text and "0.9x" in text
