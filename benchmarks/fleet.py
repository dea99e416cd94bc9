"""Fleet replay: N processes stand for N hosts sharing one small redis-server, with an operator connecting every 100 ms; redis-py's pools vs SafeConnectionPool."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (HERE, ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

import _common as c  # noqa: E402
import _fleet_workers as fw  # noqa: E402

SHORT = {"CP": fw.CP, "BCP": fw.BCP, "Safe": fw.SAFE}
WORKER = os.path.join(HERE, "_fleet_workers.py")
BEGIN, END = "<!-- bench:fleet:begin -->", "<!-- bench:fleet:end -->"
PHASES = ("steady", "after")  # steady state; after the server was killed and restarted


@dataclass
class PhaseResult:
    seconds: float = 0.0
    peak_connected: Optional[int] = None  # clients the server holds, less the monitor
    peak_fleet: Optional[int] = None      # of those, the fleet's (by client name)
    rejected: Optional[int] = None        # rejected_connections, less the operator's and monitor's
    operator_refused: int = 0
    operator_ok: int = 0
    host_ops: List[int] = field(default_factory=list)
    errors: Dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return sum(self.host_ops) / self.seconds if self.seconds else 0.0


@dataclass
class KindResult:
    kind: str
    maxclients: int
    phases: Dict[str, PhaseResult] = field(default_factory=dict)


def no_retry() -> Any:
    """One attempt per connect: each refused connect is counted once, as the server counts it."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


class Watch:
    """The monitor (one connection of its own, sampling INFO clients every 20 ms) and the
    operator (a fresh connection and a PING every 100 ms), both told the phase."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.phase = "warmup"
        self.results: Dict[str, PhaseResult] = {}
        self.own_rejections = 0  # refused connects of the monitor and operator, in this server life
        self._stop = threading.Event()
        self._mon: Any = None
        self._threads = [threading.Thread(target=self._monitor, daemon=True),
                         threading.Thread(target=self._operator, daemon=True)]

    def start(self) -> "Watch":
        self._connect_monitor()
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def current(self) -> PhaseResult:
        return self.results.setdefault(self.phase, PhaseResult())

    def _connect_monitor(self) -> bool:
        import redis

        try:
            mon = redis.Redis(host=self.server.host, port=self.server.port,
                              single_connection_client=True, socket_timeout=2,
                              socket_connect_timeout=2, retry=no_retry())
            mon.ping()
            self._mon = mon
            return True
        except redis.RedisError as exc:
            self._mon = None
            if "max number of clients" in str(exc):
                self.own_rejections += 1
            return False

    def _monitor(self) -> None:
        import redis

        while not self._stop.wait(0.02 if self._mon is not None else 0.002):
            if self._mon is None and not self._connect_monitor():
                continue
            try:
                listed = self._mon.execute_command("CLIENT", "LIST")
            except (redis.RedisError, OSError):
                self._mon = None
                continue
            lines = [ln for ln in (listed.decode() if isinstance(listed, bytes) else listed)
                     .splitlines() if ln.strip()]
            clients = len(lines) - 1  # less the monitor
            fleet = sum(1 for ln in lines if f" name={fw.CLIENT_NAME} " in f" {ln} ")
            r = self.current()
            r.peak_connected = clients if r.peak_connected is None else max(r.peak_connected, clients)
            r.peak_fleet = fleet if r.peak_fleet is None else max(r.peak_fleet, fleet)

    def _operator(self) -> None:
        import redis

        while not self._stop.wait(0.1):
            if self.phase not in PHASES:
                continue
            r = self.current()
            op = redis.Redis(host=self.server.host, port=self.server.port, socket_timeout=2,
                             socket_connect_timeout=2, retry=no_retry())
            try:
                op.ping()
                r.operator_ok += 1
            except (redis.RedisError, OSError) as exc:
                if self.server.running and "max number of clients" in str(exc):
                    r.operator_refused += 1
                    self.own_rejections += 1
            finally:
                op.close()

    def rejected_total(self) -> Optional[int]:
        try:
            return int(self._mon.info("stats")["rejected_connections"]) if self._mon else None
        except Exception:  # the monitor lost its connection at this moment
            return None


def run_kind(kind: str, args: argparse.Namespace, maxclients: int, restart: bool,
             log: Any) -> KindResult:
    from redis_safepool.testing import RedisServer

    server = RedisServer(maxclients=maxclients).start()
    watch = Watch(server).start()
    limit = args.warmup + args.steady + args.down + args.after + 120
    hosts = [subprocess.Popen([sys.executable, WORKER, kind, server.url, str(args.threads),
                               str(args.max_connections), str(limit)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": ROOT})
             for _ in range(args.hosts)]
    result = KindResult(kind, maxclients)
    try:
        for h in hosts:
            if h.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a {kind} host did not start")

        def tell(phase: str) -> None:
            watch.phase = phase
            for h in hosts:
                h.stdin.write(f"phase {phase}\n")
                h.stdin.flush()
            for h in hosts:  # every host counts in the new phase from here on
                if h.stdout.readline().strip() != "ok":
                    raise RuntimeError(f"a {kind} host stopped")

        tell("warmup")
        time.sleep(args.warmup)
        base = watch.rejected_total() or 0
        own = watch.own_rejections
        started = time.monotonic()
        tell("steady")
        time.sleep(args.steady)
        steady = watch.current()
        steady.seconds = time.monotonic() - started
        total = watch.rejected_total()
        steady.rejected = None if total is None else total - base - (watch.own_rejections - own)
        if restart:
            tell("down")
            log(f"  {kind}: killing redis-server, {args.down:.1f}s down")
            server.kill()
            time.sleep(args.down)
            watch.own_rejections = 0
            start_again(server)
            started = time.monotonic()
            tell("after")
            time.sleep(args.after)
            after = watch.current()
            after.seconds = time.monotonic() - started
            total = watch.rejected_total()
            after.rejected = None if total is None else total - watch.own_rejections
        for h in hosts:
            h.stdin.write("stop\n")
            h.stdin.flush()
        for h in hosts:
            out, _ = h.communicate(timeout=60)
            data = json.loads(out.strip().splitlines()[-1])
            for phase in PHASES:
                if phase in watch.results:
                    r = watch.results[phase]
                    r.host_ops.append(data["ops"].get(phase, 0))
                    for name, n in data["errors"].get(phase, {}).items():
                        r.errors[name] = r.errors.get(name, 0) + n
        result.phases = {p: watch.results[p] for p in PHASES if p in watch.results}
        return result
    finally:
        watch.stop()
        for h in hosts:
            if h.poll() is None:
                h.kill()
                h.wait(10)
        server.stop()


def start_again(server: Any) -> None:
    """Start the killed server again. A PONG is more than a fleet that fills the server at
    once may let it give: any answer will do here."""
    server.start(any_answer=True)


def reserve_of(maxclients: int) -> int:
    import redis_safepool as sp

    cfg = sp.checker_config()
    fraction, floor = cfg["server_reserve"], cfg["server_reserve_min"]
    share = fraction * maxclients
    reserve = max(int(share) + (int(share) < share), floor)
    return min(reserve, maxclients // 2)


def spread(ops: Sequence[int], seconds: float) -> str:
    if not ops or not seconds:
        return "-"
    rates = sorted(o / seconds for o in ops)
    return f"{rates[0]:,.0f} / {statistics.median(rates):,.0f} / {rates[-1]:,.0f}"


def na(value: Optional[int]) -> str:
    """A count, or why there is none: the fleet kept the monitor out of a full server."""
    return "n/a (full)" if value is None else str(value)


def rows(results: Sequence[KindResult]) -> List[List[str]]:
    out = []
    for res in results:
        for phase, r in res.phases.items():
            errs = sum(r.errors.values())
            out.append([res.kind, "steady" if phase == "steady" else "after restart",
                        na(r.peak_connected), na(r.peak_fleet), na(r.rejected),
                        str(r.operator_refused),
                        f"{r.rate:,.0f}", spread(r.host_ops, r.seconds), str(errs)])
    return out


HEADERS = ["pool", "phase", "peak connected", "peak fleet", "rejected", "operator refused", "cmd/s",
           "per host min / median / max", "worker errors"]


def targets(results: Sequence[KindResult], baseline: Optional[KindResult],
            args: argparse.Namespace) -> List[c.Target]:
    safe = next((r for r in results if r.kind == fw.SAFE), None)
    if safe is None:
        return []
    ts = []
    for phase, label in (("steady", "steady state"), ("after", "after the restart")):
        r = safe.phases.get(phase)
        if r is None:
            continue
        ts.append(c.Target(f"Safe: 0 rejected connections, {label}", str(r.rejected),
                           r.rejected == 0))
        ts.append(c.Target(f"Safe: 0 refused operator connects, {label}",
                           str(r.operator_refused), r.operator_refused == 0))
    steady = safe.phases.get("steady")
    limit = args.maxclients - reserve_of(args.maxclients)
    for phase, label in (("steady", "steady state"), ("after", "after the restart")):
        r = safe.phases.get(phase)
        if r is not None:
            # what the server counts (probes and the operator included), as its
            # connected_clients says, less the monitor's own connection
            ts.append(c.Target(f"Safe: peak connected clients <= maxclients - reserve ({limit}), "
                               f"{label}", str(r.peak_connected),
                               r.peak_connected is not None and r.peak_connected <= limit))
    if steady is not None:
        errs = sum(steady.errors.values())
        ts.append(c.Target("Safe: no worker errors in steady state", str(errs), errs == 0))
        idle = sum(1 for o in steady.host_ops if o == 0)
        ts.append(c.Target("Safe: every process completes commands",
                           f"{len(steady.host_ops) - idle}/{len(steady.host_ops)} hosts", idle == 0))
    if baseline is not None and steady is not None and baseline.phases.get("steady"):
        ref = baseline.phases["steady"].rate
        ratio = steady.rate / ref if ref else 0.0
        ts.append(c.Target(f"Safe: throughput >= 0.9x of the fleet against maxclients="
                           f"{baseline.maxclients}", f"{ratio:.2f}x", ratio >= 0.9))
    return ts


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--demo", action="store_true", help="a short run with readable tables (make demo)")
    ap.add_argument("--quick", action="store_true", help="shorter phases")
    ap.add_argument("--hosts", type=int, default=12)
    ap.add_argument("--threads", type=int, default=16, help="worker threads per host")
    ap.add_argument("--max-connections", type=int, default=16, help="each host's pool")
    ap.add_argument("--maxclients", type=int, default=64)
    ap.add_argument("--baseline-maxclients", type=int, default=1000,
                    help="the same fleet against a roomy server, for the throughput ratio (0: skip)")
    ap.add_argument("--warmup", type=float, default=1.5)
    ap.add_argument("--steady", type=float, default=5.0)
    ap.add_argument("--down", type=float, default=0.5, help="seconds the server stays down")
    ap.add_argument("--after", type=float, default=5.0, help="seconds measured after the restart")
    ap.add_argument("--kinds", default="CP,BCP,Safe")
    ap.add_argument("--write", metavar="FILE", help="replace the fleet block of FILE (BENCHMARKS.md)")
    args = ap.parse_args(argv)
    if args.demo:
        args.hosts, args.threads, args.max_connections, args.maxclients = 6, 8, 8, 32
        args.warmup, args.steady, args.down, args.after = 0.5, 2.0, 0.3, 2.0
        args.baseline_maxclients = 0
    elif args.quick:
        args.warmup, args.steady, args.down, args.after = 0.5, 2.0, 0.3, 2.0
    return args


def run(args: argparse.Namespace, log: Any = None) -> c.Section:
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    kinds = [SHORT[k.strip()] for k in args.kinds.split(",") if k.strip()]
    results = []
    for kind in kinds:
        log(f"fleet: {args.hosts} hosts x {args.threads} threads, {kind}, maxclients={args.maxclients}")
        results.append(run_kind(kind, args, args.maxclients, True, log))
    baseline = None
    if args.baseline_maxclients and fw.SAFE in kinds:
        log(f"fleet: the same {fw.SAFE} fleet against maxclients={args.baseline_maxclients}")
        baseline = run_kind(fw.SAFE, args, args.baseline_maxclients, False, log)
    same_count = same_count_run(results, baseline, args, log)
    table = rows(results)
    if baseline is not None:
        table += [[f"{r[0]} (maxclients={args.baseline_maxclients})"] + r[1:] for r in rows([baseline])]
    if same_count is not None:
        n = same_count.max_connections
        table += [[f"{r[0]} (maxclients={args.baseline_maxclients}, max_connections={n})"] + r[1:]
                  for r in rows([same_count.result])]
    wanted = args.hosts * args.max_connections
    section = c.Section(
        "fleet", f"fleet: {args.hosts} hosts x {args.threads} threads, max_connections="
                 f"{args.max_connections} each ({wanted} wanted), maxclients={args.maxclients}",
        f"Each host is a process with its own pool (INCR in a loop); an operator opens a fresh "
        f"connection and PINGs every 100 ms. The server is killed under load and restarted after "
        f"{args.down:.1f}s. Peak connected: every client the server holds but the monitor's "
        f"own connection (probes and the operator included); peak fleet: the hosts' pooled "
        f"connections (by client name). Rejected leaves out the operator's refused connects "
        f"(counted apart).",
        tables=[(HEADERS, table)], targets=targets(results, baseline, args),
        data={"results": results, "baseline": baseline})
    reserve = reserve_of(args.maxclients)
    section.notes.append(f"reserve kept free by SafeConnectionPool: {reserve} of {args.maxclients} "
                         f"(checker_config server_reserve / server_reserve_min)")
    errors = {}
    for res in results:
        for phase, r in res.phases.items():
            for name, n in r.errors.items():
                errors[(res.kind, name)] = errors.get((res.kind, name), 0) + n
    if same_count is not None:
        section.notes.append(same_count.note(results, args))
    for (kind, name), n in sorted(errors.items(), key=lambda kv: -kv[1])[:6]:
        section.notes.append(f"{kind}: {n} x {name}")
    return section


@dataclass
class SameCount:
    """The Safe fleet against the roomy server with as many connections as it held saturated."""

    max_connections: int
    result: KindResult

    def note(self, results: Sequence[KindResult], args: argparse.Namespace) -> str:
        safe = next(r for r in results if r.kind == fw.SAFE)
        ref = self.result.phases["steady"].rate
        ratio = safe.phases["steady"].rate / ref if ref else 0.0
        return (f"the same {fw.SAFE} fleet with max_connections={self.max_connections} against "
                f"maxclients={self.result.maxclients} ({self.max_connections * args.hosts} "
                f"connections, about as many as it held against maxclients={args.maxclients}): "
                f"{ref:,.0f} cmd/s in steady state; the saturated fleet's is {ratio:.2f}x that, "
                "which separates what admission costs from what fewer connections cost")


def same_count_run(results: Sequence[KindResult], baseline: Optional[KindResult],
                   args: argparse.Namespace, log: Any) -> Optional[SameCount]:
    """With a roomy baseline: the Safe fleet once more against it, each host with the share
    of connections it had against the small server."""
    safe = next((r for r in results if r.kind == fw.SAFE), None)
    steady = safe.phases.get("steady") if safe is not None else None
    if baseline is None or steady is None or not steady.peak_fleet:
        return None
    n = max(1, round(steady.peak_fleet / args.hosts))
    if n >= args.max_connections:
        return None
    log(f"fleet: the same {fw.SAFE} fleet with max_connections={n} against "
        f"maxclients={args.baseline_maxclients}")
    narrowed = argparse.Namespace(**{**vars(args), "max_connections": n})
    return SameCount(n, run_kind(fw.SAFE, narrowed, args.baseline_maxclients, False, log))


def run_section(ctx: c.Context) -> c.Section:
    """`make bench` (benchmarks/run.py): the fleet replay on servers of its own."""
    argv = ["--quick"] if ctx.settings.quick else []
    return run(parse_args(argv), ctx.log)


def write_markdown(path: str, text: str) -> None:
    body = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    block = f"{BEGIN}\n{text.rstrip()}\n{END}"
    if BEGIN in body and END in body:
        head, rest = body.split(BEGIN, 1)
        body = head + block + rest.split(END, 1)[1]
    else:
        body = body.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(body)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = time.monotonic()
    if args.demo:
        print("Fleet replay: several processes share one small redis-server while an operator "
              "keeps connecting; redis-py's pools vs SafeConnectionPool.", flush=True)
    section = run(args)
    print("\n" + section.markdown(), flush=True)
    if args.write:
        info = c.machine_info()
        text = (f"Command: `.venv/bin/python benchmarks/fleet.py {' '.join(argv)}` (took "
                f"{time.monotonic() - started:.0f}s; {info['machine']}, load average at the end "
                f"{info['load average at the end']}, {info['redis-safepool']})\n\n"
                + section.markdown())
        write_markdown(args.write, text)
        print(f"results written to {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
