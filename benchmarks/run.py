"""`make bench`: run the benchmarks against a throwaway redis-server, print tables, optionally update BENCHMARKS.md."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (HERE, ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

import _common as c  # noqa: E402

# Every benchmark module exposes NAME and run(ctx: _common.Context) -> _common.Section.
# Modules listed in OPTIONAL (owned by others) join the run only when they opt in by
# defining run_section(ctx: _common.Context) -> _common.Section.
BENCHMARKS = ["pool_overhead", "get_throughput", "fairness", "gil", "async_throughput", "host_scope"]
OPTIONAL = ["storm", "fleet"]
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"


def available() -> List[str]:
    names = list(BENCHMARKS)
    for name in OPTIONAL:
        if os.path.exists(os.path.join(HERE, f"{name}.py")):
            mod = importlib.import_module(name)
            if callable(getattr(mod, "run_section", None)):
                names.append(name)
    return names


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="smoke run: a few seconds in total")
    p.add_argument("--only", default="", help="comma-separated benchmark names")
    p.add_argument("--write", metavar="FILE", help="replace the results block of FILE (BENCHMARKS.md)")
    p.add_argument("--seconds", type=float, help="seconds per pool per cell (default 1.5)")
    p.add_argument("--rounds", type=int, help="alternations of the three pools per cell (default 2)")
    p.add_argument("--redis-py-only", action="store_true", help="skip SafeConnectionPool")
    p.add_argument("--list", action="store_true", help="list benchmark names and exit")
    return p.parse_args(argv)


def header(argv: List[str], total: float) -> str:
    info = c.machine_info()
    lines = ["## Results", "",
             f"Command: `.venv/bin/python benchmarks/run.py {' '.join(argv)}`".replace(" `", " `")
             .replace("run.py `", "run.py`"),
             f"(took {total:.0f}s). Ratios compare pools measured in the same run, alternating.", ""]
    lines += [f"- **{k}**: {v}" for k, v in info.items()]
    return "\n".join(lines) + "\n"


def write_results(path: str, block: str) -> None:
    """Replace the text between the result markers of ``path`` (append the block if none)."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    new = f"{BEGIN}\n{block.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + new + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + new + "\n"
    with open(path, "w") as f:
        f.write(text)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    names = available()
    if args.list:
        print("\n".join(names))
        return 0
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {names}", file=sys.stderr)
        return 2
    settings = c.Settings.quick_mode() if args.quick else c.Settings()
    if args.seconds:
        settings.cell_seconds = args.seconds
    if args.rounds:
        settings.rounds = args.rounds

    started = time.perf_counter()
    sections = []
    with c.BenchServer() as server:
        ctx = c.make_context(server, settings, only_redis_py=args.redis_py_only)
        if ctx.safe_error:
            ctx.log(f"SafeConnectionPool unavailable ({ctx.safe_error}); measuring redis-py's pools only")
        for name in chosen:
            ctx.log(f"{name} ...")
            mod = importlib.import_module(name)
            section = (mod.run if name in BENCHMARKS else mod.run_section)(ctx)
            print("\n" + section.markdown(), flush=True)
            sections.append(section)
    total = time.perf_counter() - started

    targets = [t for s in sections for t in s.targets]
    summary = ""
    if targets:
        summary = "### Pool targets\n\n" + c.markdown_table(
            ["target", "measured", "status"], [[t.name, t.measured, f"**{t.flag}**"] for t in targets]) + "\n"
        print("\n" + summary)
    if args.write:
        block = "\n".join([header(argv, total), summary] + [s.markdown() for s in sections])
        write_results(args.write, block)
        print(f"results written to {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
