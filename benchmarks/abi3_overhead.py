"""Checkout+release of the stable-ABI (abi3) build against the version-specific one, same run."""

from __future__ import annotations

import argparse
import re
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

BUILDS = ("version-specific", "abi3")
THREADS = (1, 4)
LIMIT = 8
WARMUP_PAIRS = 2_000
CALLGRIND_PAIRS = (2_000, 42_000)  # instructions per pair: the difference of two runs


def build(out: str, abi3: bool) -> str:
    """The package tree with its extension built into ``out``; returns the tree."""
    tree = os.path.join(out, "abi3" if abi3 else "native")
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "redis_safepool"), os.path.join(tree, "redis_safepool"),
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    env = dict(os.environ)
    env.pop("SAFEPOOL_ABI3", None)
    if abi3:
        env["SAFEPOOL_ABI3"] = "1"
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--force",
                    "--build-temp", tree + "-tmp", "--build-lib", tree],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return tree


def worker(port: int, pairs: int, threads: int, expect: str) -> None:
    """One measurement in this process: ``pairs`` checkout+release on ``threads`` threads."""
    import _common as c
    import pool_overhead
    import redis_safepool._core as core
    if expect not in core.__file__:
        raise SystemExit(f"wrong _core imported: {core.__file__}")
    ctx = c.make_context(type("S", (), {"host": "127.0.0.1", "port": port}), c.Settings())
    pool = c.make_pool(ctx, c.SAFE, LIMIT)
    c.prewarm(pool, min(threads, LIMIT))
    pool_overhead.counted_loop(pool, WARMUP_PAIRS)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    if threads == 1:
        errors = pool_overhead.counted_loop(pool, pairs)
    else:
        run = c.run_threads(threads, lambda i, _d: pool_overhead.counted_loop(pool, pairs // threads),
                            600.0)
        errors = sum(run.results)
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    c.close_pool(pool)
    print(json.dumps({"rate": pairs / elapsed, "cpu_us": 1e6 * cpu / pairs, "errors": errors,
                      "core": os.path.basename(core.__file__)}))


def measure(tree: str, port: int, pairs: int, threads: int, expect: str) -> Dict[str, float]:
    env = dict(os.environ, PYTHONPATH=tree, PYTHONSAFEPATH="1")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", str(port),
                          str(pairs), str(threads), expect],
                         env=env, check=True, capture_output=True, text=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


def instructions_per_pair(tree: str, port: int, expect: str) -> float:
    """Instructions executed per checkout+release (callgrind: deterministic, load-independent)."""
    totals = []
    for pairs in CALLGRIND_PAIRS:
        env = dict(os.environ, PYTHONPATH=tree, PYTHONSAFEPATH="1")
        err = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                              sys.executable, os.path.abspath(__file__), "--worker", str(port),
                              str(pairs), "1", expect],
                             env=env, check=True, capture_output=True, text=True,
                             timeout=900).stderr
        totals.append(int(re.search(r"Collected : (\d+)", err).group(1)))
    return (totals[1] - totals[0]) / (CALLGRIND_PAIRS[1] - CALLGRIND_PAIRS[0])


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pairs", type=int, default=200_000, help="checkout+release pairs per sample")
    p.add_argument("--rounds", type=int, default=7, help="alternations of the two builds")
    p.add_argument("--callgrind", action="store_true",
                   help="also count instructions per pair under valgrind (1 thread)")
    p.add_argument("--out", default=os.path.join(ROOT, "build", "bench-abi3"))
    p.add_argument("--worker", nargs=4, metavar=("PORT", "PAIRS", "THREADS", "EXPECT"),
                   help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        worker(int(a.worker[0]), int(a.worker[1]), int(a.worker[2]), a.worker[3])
        return 0

    import _common as c
    trees = {"version-specific": build(a.out, False), "abi3": build(a.out, True)}
    expect = {"version-specific": "/native/", "abi3": "/abi3/"}
    samples: Dict[tuple, List[Dict[str, float]]] = {}
    with c.BenchServer() as server:
        for threads in THREADS:
            for r in range(a.rounds):
                order = BUILDS if r % 2 == 0 else BUILDS[::-1]
                for b in order:
                    m = measure(trees[b], server.port, a.pairs, threads, expect[b])
                    samples.setdefault((b, threads), []).append(m)
        instructions = ({b: instructions_per_pair(trees[b], server.port, expect[b]) for b in BUILDS}
                        if a.callgrind else None)
    print(f"abi3_overhead: {a.pairs} checkout+release pairs per sample, {a.rounds} alternating "
          f"rounds, limit {LIMIT}, {sys.version.split()[0]}")
    print("| threads | version-specific pairs/s | abi3 pairs/s | abi3/specific | "
          "CPU us/pair specific / abi3 |")
    print("| --- | --- | --- | --- | --- |")
    for threads in THREADS:
        med = {b: statistics.median(m["rate"] for m in samples[(b, threads)]) for b in BUILDS}
        cpu = {b: statistics.median(m["cpu_us"] for m in samples[(b, threads)]) for b in BUILDS}
        print(f"| {threads} | {c.fmt_rate(med['version-specific'])} | {c.fmt_rate(med['abi3'])} | "
              f"{med['abi3'] / med['version-specific']:.3f} | "
              f"{cpu['version-specific']:.2f} / {cpu['abi3']:.2f} |")
    if instructions:
        print(f"\ninstructions per pair (callgrind, 1 thread): version-specific "
              f"{instructions['version-specific']:.0f}, abi3 {instructions['abi3']:.0f}, "
              f"abi3/specific {instructions['abi3'] / instructions['version-specific']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
