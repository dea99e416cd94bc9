"""Incident replay (the restart storm): kill and restart redis-server under many retrying workers, for all three pools."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _storm_workers as sw  # noqa: E402

SHORT = {sw.CP: "CP", sw.BCP: "BCP", sw.SAFE: "Safe"}
FAIL_FAST = 0.005       # errors while the server is down fail in under 5 ms (no thread hangs)
FIRST_OK = 0.5          # first success within 500 ms of the server accepting again
BACK_WITHIN = 2.0       # throughput back within 2 s

FULL = dict(warmup=1.0, pre=1.5, outage=2.0, post=3.5)
QUICK = dict(warmup=0.4, pre=0.5, outage=1.0, post=1.5)


# --------------------------------------------------------------------------- formatting


def ms(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    v = seconds * 1e3
    return f"{v:.3f} ms" if v < 1 else f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms"


def secs(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def rate(x: float) -> str:
    return f"{x / 1e3:.1f}k ops/s" if x >= 1e3 else f"{x:.0f} ops/s"


def peak(r: sw.Result, after: bool) -> str:
    value, full = (r.peak_after, r.full_after) if after else (r.peak_before, r.full_before)
    text = "-" if value is None else str(value)
    return f"{text} (server full)" if full else text


def rows_for(results: Sequence[sw.Result]) -> List[Tuple[str, List[str]]]:
    """(metric, one cell per pool) rows of the side-by-side table."""
    def cells(fn: Any) -> List[str]:
        return [fn(r) for r in results]

    def attempts(r: sw.Result) -> str:
        probes = f" (+{r.probes_down} probes)" if r.probes_down is not None else ""
        return f"{r.attempts_down}{probes}"

    def fail(r: sw.Result) -> str:
        if r.fail_p50 is None:
            return "-"
        return f"{ms(r.fail_p50)} / {ms(r.fail_p99)} / {ms(r.fail_max)}"

    def in_flight(r: sw.Result) -> str:
        return "-" if not r.in_flight_failed else f"{r.in_flight_failed}, last {ms(r.in_flight_max)}"

    def kinds(types: Dict[str, int]) -> str:
        return ", ".join(f"{n} {k}" for k, n in sorted(types.items(), key=lambda kv: -kv[1])[:2])

    return [
        ("server conns, peak before kill", cells(lambda r: peak(r, False))),
        ("errors before kill", cells(lambda r: str(r.errors_before))),
        ("throughput before kill", cells(lambda r: rate(r.pre_rate))),
        ("connect attempts while down", cells(attempts)),
        ("server died after SIGKILL", cells(lambda r: ms(r.died_after))),
        ("errors during outage", cells(lambda r: str(r.outage_errors))),
        ("  of which", cells(lambda r: kinds(r.outage_error_types) or "-")),
        ("  issued while down: fail p50/p99/max", cells(fail)),
        ("  in flight when it died: failed, last after", cells(in_flight)),
        ("server conns, peak after restart", cells(lambda r: peak(r, True))),
        ("conns accepted after restart", cells(lambda r: str(r.accepted_after))),
        ("conns rejected after restart", cells(lambda r: str(r.rejected_after))),
        ("first success after restart", cells(lambda r: ms(r.first_ok))),
        ("throughput back to 90% after", cells(lambda r: secs(r.recovered_in))),
        ("throughput, last second", cells(lambda r: rate(r.post_rate))),
        ("workers hung", cells(lambda r: str(r.hung))),
    ]


def text_table(results: Sequence[sw.Result]) -> str:
    headers = ["", *(r.kind for r in results)]
    rows = [[name, *vals] for name, vals in rows_for(results)]
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    def line(row: Sequence[str]) -> str:
        return "  ".join([str(row[0]).ljust(widths[0])] +
                         [str(c).rjust(w) for c, w in zip(row[1:], widths[1:])])
    return "\n".join([line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def markdown_table(results: Sequence[sw.Result]) -> str:
    headers = ["", *(r.kind for r in results)]
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for name, vals in rows_for(results):
        out.append("| " + " | ".join([name.strip(), *vals]) + " |")
    return "\n".join(out)


def title(results: Sequence[sw.Result]) -> str:
    c = results[0].cfg
    how = "one pool per worker" if c.mode == sw.PER_WORKER else "one pool shared by all workers"
    return (f"{c.workers} workers, {how}, max_connections={c.max_connections}, "
            f"maxclients={c.maxclients}, {c.outage:g} s outage")


def targets(results: Sequence[sw.Result]) -> List[Tuple[str, str, Optional[bool]]]:
    """The storm targets, judged on SafeConnectionPool with one pool per worker."""
    safe = [r for r in results if r.kind == sw.SAFE and r.mode == sw.PER_WORKER]
    if not safe:
        return []
    r = safe[0]
    m = r.cfg.max_connections
    back = r.recovered_in
    return [
        (f"peak established connections after restart <= {m}", str(r.peak_after),
         r.peak_after is not None and r.peak_after <= m and not r.full_after),
        ("0 rejected connections", str(r.rejected_after), r.rejected_after == 0),
        ("outage errors fail in < 5 ms each (commands issued while down)",
         f"p99 {ms(r.fail_p99)}, max {ms(r.fail_max)}",
         r.fail_max is not None and r.fail_max < FAIL_FAST),
        ("no thread hangs (in-flight commands fail, workers stop)",
         f"{r.hung} hung; in-flight failed within {ms(r.in_flight_max)}",
         r.hung == 0 and (r.in_flight_max or 0) < r.cfg.socket_timeout),
        ("first success < 500 ms after the server accepts again", ms(r.first_ok),
         r.first_ok is not None and r.first_ok < FIRST_OK),
        ("throughput back to the pre-outage level within 2 s", secs(back),
         back is not None and back <= BACK_WITHIN),
    ]


def flag(met: Optional[bool]) -> str:
    return "n/a" if met is None else "MET" if met else "NOT MET"


# --------------------------------------------------------------------------- progress


class Progress:
    """A live, rewritten status line on a terminal; one plain line per phase otherwise."""

    def __init__(self, stream: Any, total: int) -> None:
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.total = total
        self.index = 0
        self.name = ""
        self._phase = ""
        self._last = ""

    def start(self, cfg: sw.Config) -> None:
        self.index += 1
        self.name = f"{SHORT[cfg.kind]} {cfg.mode}"
        self._phase = self._last = ""

    def __call__(self, phase: str, t: float, info: Dict[str, Any]) -> None:
        conns = "?" if info.get("conns") is None else info["conns"]
        state = f"  state={info['state']}" if info.get("state") else ""
        text = (f"[{self.index}/{self.total}] {self.name:<22} {phase:<9} t={t:4.1f}s  "
                f"ok={info['ops']:>7}  errors={info['errors']:>6}  server conns={conns}{state}")
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
        elif phase != self._phase and self._last:
            self.stream.write(self._last + "\n")   # how the previous phase ended
            self.stream.flush()
        self._phase, self._last = phase, text

    def done(self) -> None:
        self.stream.write("\r\x1b[K" if self.tty else (self._last + "\n" if self._last else ""))
        self.stream.flush()
        self._last = ""


# --------------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--demo", action="store_true", help="readable side-by-side tables (make demo)")
    ap.add_argument("--quick", action="store_true", help="shorter phases (about 30 s in all)")
    ap.add_argument("--workers", type=int, default=200)
    ap.add_argument("--max-connections", type=int, default=16)
    ap.add_argument("--maxclients", type=int, default=64)
    ap.add_argument("--outage", type=float, default=None, help="seconds the server stays down")
    ap.add_argument("--modes", default=",".join(sw.MODES), help="per-worker,shared")
    ap.add_argument("--kinds", default=",".join(SHORT.values()), help="CP,BCP,Safe")
    ap.add_argument("--conn-retries", type=int, default=0,
                    help="redis-py Retry count inside each connection (default 0, as pools built "
                         "without retry=)")
    ap.add_argument("--seed", type=int, default=None, help="seed the backoff jitter")
    ap.add_argument("--prefork", action="store_true",
                    help="the prefork scenario only: forked processes x threads, process vs host "
                         "scope (benchmarks/_storm_prefork.py)")
    ap.add_argument("--processes", type=int, default=8, help="--prefork: forked processes")
    ap.add_argument("--threads", type=int, default=25, help="--prefork: threads per process")
    ap.add_argument("--json", metavar="FILE", help="write raw results as JSON")
    ap.add_argument("--write", metavar="FILE", help="write the results as markdown (STORM.md)")
    args = ap.parse_args(argv)
    if args.workers < 1 or args.max_connections < 1 or args.maxclients < 2:
        ap.error("--workers, --max-connections >= 1 and --maxclients >= 2")
    return args


def configs(args: argparse.Namespace) -> List[sw.Config]:
    phases = dict(QUICK if args.quick else FULL)
    if args.outage is not None:
        phases["outage"] = args.outage
    by_short = {v.lower(): k for k, v in SHORT.items()}
    kinds = [by_short[k.strip().lower()] for k in args.kinds.split(",") if k.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in sw.MODES:
            raise SystemExit(f"unknown mode {m!r}; use {', '.join(sw.MODES)}")
    base = sw.Config(kind=sw.SAFE, mode=sw.PER_WORKER, workers=args.workers,
                     max_connections=args.max_connections, maxclients=args.maxclients,
                     conn_retries=args.conn_retries, **phases)
    return [replace(base, kind=k, mode=m) for m in modes for k in kinds]


def run(args: argparse.Namespace, out: Any = sys.stdout, err: Any = sys.stderr) -> List[sw.Result]:
    sw.jitter_seed(args.seed)
    cfgs = configs(args)
    progress = Progress(err if not args.demo else out, len(cfgs))
    results: List[sw.Result] = []
    for cfg in cfgs:
        progress.start(cfg)
        try:
            results.append(sw.run_scenario(cfg, progress))
        finally:
            progress.done()
    return results


def report(results: Sequence[sw.Result], out: Any) -> None:
    for mode in sw.MODES:
        group = [r for r in results if r.mode == mode]
        if not group:
            continue
        out.write(f"\n{title(group)}\n\n{text_table(group)}\n")
    tg = targets(results)
    if tg:
        out.write("\nstorm targets (SafeConnectionPool, one pool per worker):\n")
        for name, measured, met in tg:
            out.write(f"  {flag(met):<8} {name}: {measured}\n")
    out.write("\n")
    out.flush()


def markdown(results: Sequence[sw.Result], argv: Sequence[str], elapsed: float) -> str:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import machine_info
    info = machine_info()
    out = ["## Results", "", f"Command: `.venv/bin/python benchmarks/storm.py {' '.join(argv)}`"
           f" ({elapsed:.0f} s)", ""]
    out += [f"- {k}: {v}" for k, v in info.items()]
    for mode in sw.MODES:
        group = [r for r in results if r.mode == mode]
        if group:
            out += ["", f"### {title(group)}", "", markdown_table(group)]
    tg = targets(results)
    if tg:
        out += ["", "### Storm targets (SafeConnectionPool, one pool per worker)", "",
                "| target | measured | status |", "|---|---|---|"]
        out += [f"| {n} | {m} | **{flag(met)}** |" for n, m, met in tg]
    return "\n".join(out) + "\n"


def write_markdown(path: str, body: str) -> None:
    """Replace the results part of ``path`` (from '## Results' on), keeping the text above it."""
    head = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
        head = text.split("## Results", 1)[0]
    with open(path, "w") as f:
        f.write((head or "# Incident replay\n\n") + body)


def to_json(results: Sequence[sw.Result]) -> List[Dict[str, Any]]:
    return [{**{k: v for k, v in asdict(r).items() if k != "cfg"}, "cfg": asdict(r.cfg)}
            for r in results]


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    # the pool logs every transition; the tables say what happened, so keep stderr quiet
    logging.getLogger("redis_safepool").addHandler(logging.NullHandler())
    started = time.monotonic()
    if args.prefork:
        return prefork_main(args, argv, started)
    if args.demo:
        print("Incident replay: redis-server is killed under load and restarted; "
              "redis-py's pools vs SafeConnectionPool.", flush=True)
    results = run(args)
    report(results, sys.stdout)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(to_json(results), f, indent=1, default=str)
    if args.write:
        write_markdown(args.write, markdown(results, argv, time.monotonic() - started))
    return 0


def prefork_main(args: argparse.Namespace, argv: Sequence[str], started: float) -> int:
    """The prefork scenario: the same storm from forked processes, process scope vs host scope."""
    import _storm_prefork as pf

    if args.demo:
        print(f"Prefork replay: {args.processes} forked processes x {args.threads} threads "
              "(one pool per thread), server killed and restarted; scope=\"process\" vs "
              "scope=\"host\".", flush=True)
    results = pf.run_both(args.quick, processes=args.processes, threads=args.threads,
                          max_connections=args.max_connections, maxclients=args.maxclients)
    print(f"\n{pf.title(results)}\n\n{pf.text_table(results)}\n", flush=True)
    if args.write:
        body = (f"## Prefork results\n\nCommand: `.venv/bin/python benchmarks/storm.py "
                f"{' '.join(argv)}` ({time.monotonic() - started:.0f} s)\n\n"
                f"### {pf.title(results)}\n\n{pf.markdown_table(results)}\n")
        write_prefork_markdown(args.write, body)
    return 0


def write_prefork_markdown(path: str, body: str) -> None:
    """Replace the prefork part of ``path`` (from '## Prefork results' to the next '## '), or put
    it before '## Results' (which ``write_markdown`` rewrites to the end of the file)."""
    text = open(path).read() if os.path.exists(path) else "# Incident replay\n\n"
    head, sep, rest = text.partition("## Prefork results")
    if sep:
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1:] if nxt >= 0 else ""
    else:
        head, sep, rest = text.partition("## Results")
        tail = sep + rest
    with open(path, "w") as f:
        f.write(head + body + ("\n" + tail if tail else ""))


if __name__ == "__main__":
    sys.exit(main())
