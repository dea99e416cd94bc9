"""Where a checkout+release pair spends its time: callgrind instructions and perf syscalls per pair, by pool."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from typing import Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [p for p in (HERE, ROOT) if p not in sys.path]

import _common as c  # noqa: E402

LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.+?)(?:\s+\[(.+)\])?\s*$")


def loop_argv(kind: str, n: int, port: int, threads: int = 1) -> List[str]:
    return [sys.executable, os.path.join(HERE, "pool_overhead.py"), "--loop", kind, str(n),
            "--port", str(port), "--threads", str(threads)]


def child_env() -> Dict[str, str]:
    """The loop imports redis_safepool from this checkout even when it is not pip-installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
    return env


def _short(fn: str) -> str:
    """`path/to/file.c:function` -> `file.c:function`."""
    file, _, func = fn.rpartition(":")
    return f"{os.path.basename(file)}:{func}" if file else fn


def _annotate(out: str, inclusive: bool) -> Tuple[int, Dict[str, int]]:
    """Total Ir and Ir per `path:function` from callgrind_annotate (self or inclusive)."""
    text = subprocess.run(["callgrind_annotate", "--auto=no", f"--inclusive={'yes' if inclusive else 'no'}",
                           "--threshold=100", out],
                          check=True, capture_output=True, text=True, timeout=600).stdout
    total, costs = 0, defaultdict(int)
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        if m.group(2) == "PROGRAM TOTALS":
            total = ir
        else:
            costs[m.group(2)] += ir
    return total, costs


def callgrind_costs(argv: List[str], workdir: str) -> Tuple[int, Dict[str, int], Dict[str, int]]:
    """Run ``argv`` under callgrind; return total Ir, self Ir and inclusive Ir per function."""
    out = os.path.join(workdir, "callgrind.out")
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + argv,
                   check=True, capture_output=True, timeout=1800, env=child_env())
    total, self_costs = _annotate(out, inclusive=False)
    _, incl_costs = _annotate(out, inclusive=True)
    os.unlink(out)
    return total, self_costs, incl_costs


PERF_EVENTS = ["task-clock", "context-switches", "raw_syscalls:sys_enter",
               "syscalls:sys_enter_futex", "syscalls:sys_enter_poll", "syscalls:sys_enter_getpid"]


def perf_per_pair(kind: str, n: int, port: int, threads: int) -> str:
    """`perf stat` of an n-pair run minus a 0-pair run, per pair, as one line."""
    full = perf_counts(loop_argv(kind, n, port, threads))
    base = perf_counts(loop_argv(kind, 0, port, threads))
    per = {k: (full.get(k, 0) - base.get(k, 0)) / n for k in full}
    names = {"raw_syscalls:sys_enter": "syscalls", "context-switches": "context switches"}
    parts = [f"task-clock {per.get('task-clock', 0) * 1e3:.2f} us"]
    parts += [f"{names.get(e, e.split('sys_enter_')[-1])} {per.get(e, 0):.3f}"
              for e in PERF_EVENTS[1:]]
    return f"perf stat, per pair, {threads} thread(s): " + ", ".join(parts)


def perf_counts(argv: List[str]) -> Dict[str, float]:
    """task-clock (ms), context switches and syscalls of ``argv`` from `perf stat`."""
    events = ",".join(PERF_EVENTS)
    res = subprocess.run(["perf", "stat", "-x,", "-e", events] + argv,
                         capture_output=True, text=True, timeout=600, env=child_env())
    out: Dict[str, float] = {}
    for line in res.stderr.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].replace(".", "").isdigit():
            out[parts[2]] = float(parts[0])
    return out


def group_of(path_fn: str) -> str:
    """Attribute a `path/file.c:function` to the layer it belongs to."""
    if "csrc/" in path_fn or "_core" in path_fn:
        return "redis_safepool._core (C)"
    if "Python-3" in path_fn or "/cpython" in path_fn:
        return "CPython interpreter/runtime"
    if "hiredis" in path_fn:
        return "hiredis"
    if path_fn.startswith("./") or "sysdeps" in path_fn or "nptl" in path_fn or "glibc" in path_fn:
        return "libc (locks, memcpy, syscall stubs)"
    return "other"


def _print_top(title: str, costs: Dict[str, float], per_pair: float, n: int,
               inclusive: bool = False) -> None:
    """Top ``n`` functions; one function may be listed under several paths (inlined parts):
    self costs add up, inclusive costs overlap so the largest is kept."""
    merged: Dict[str, float] = defaultdict(float)
    for f, v in costs.items():
        k = _short(f)
        merged[k] = max(merged[k], v) if inclusive else merged[k] + v
    top = [(f, v) for f, v in sorted(merged.items(), key=lambda x: -x[1])[:n] if v >= 0.5]
    if not top:
        return
    print(c.markdown_table([title, "Ir/pair", "share"],
                           [[f"`{f}`", f"{v:,.0f}", f"{100 * v / per_pair:.1f}%"]
                            for f, v in top]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("-n", type=int, default=100_000, help="pairs per profiled loop")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--kinds", default=",".join(c.KINDS))
    p.add_argument("--no-callgrind", action="store_true")
    p.add_argument("--threads", type=int, nargs="*", default=[64],
                   help="also perf-stat the loop split over these thread counts (limit 8)")
    p.add_argument("--contended-n", type=int, default=400_000,
                   help="pairs of the multi-thread runs: long enough for waiter queues to form")
    a = p.parse_args()
    kinds = [k for k in a.kinds.split(",") if k]
    if c.SAFE in kinds and c.safe_pool_class()[0] is None:
        kinds.remove(c.SAFE)
    workdir = tempfile.mkdtemp(prefix="safepool-profile-")
    try:
        with c.BenchServer() as server:
            for kind in kinds:
                print(f"\n#### {kind}: {a.n} checkout+release pairs, one thread\n")
                if shutil.which("perf"):
                    print(perf_per_pair(kind, a.n, server.port, 1) + "\n")
                    for threads in a.threads:
                        print(perf_per_pair(kind, a.contended_n, server.port, threads) + "\n")
                if a.no_callgrind or not shutil.which("valgrind"):
                    continue
                tot_n, cost_n, incl_n = callgrind_costs(loop_argv(kind, a.n, server.port), workdir)
                tot_0, cost_0, incl_0 = callgrind_costs(loop_argv(kind, 0, server.port), workdir)
                delta = {f: (cost_n.get(f, 0) - cost_0.get(f, 0)) / a.n for f in cost_n}
                incl = {f: (incl_n.get(f, 0) - incl_0.get(f, 0)) / a.n for f in incl_n}
                per_pair = (tot_n - tot_0) / a.n
                print(f"callgrind: {per_pair:,.0f} instructions per pair "
                      f"(difference of a {a.n}-pair run and a 0-pair run)\n")
                groups: Dict[str, float] = defaultdict(float)
                for f, v in delta.items():
                    groups[group_of(f)] += v
                print(c.markdown_table(["where (self cost)", "Ir/pair", "share"],
                                       [[g, f"{v:,.0f}", f"{100 * v / per_pair:.0f}%"]
                                        for g, v in sorted(groups.items(), key=lambda x: -x[1])
                                        if v > 0.5]))
                print()
                _print_top("function (self cost)", delta, per_pair, a.top)
                core = {f: v for f, v in incl.items() if group_of(f).startswith("redis_safepool")}
                if any(v >= 0.5 for v in core.values()):
                    print()
                    _print_top("core function (inclusive: with callees)", core, per_pair, a.top,
                               inclusive=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
