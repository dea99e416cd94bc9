"""The restart storm of a prefork server: forked processes x threads, one safe pool per thread, process vs host scope."""

from __future__ import annotations

import logging
import multiprocessing
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import _storm_workers as sw
from redis_safepool.testing import RedisServer

SCOPES = ("process", "host")
FULL = dict(warmup=1.0, pre=1.0, outage=2.0, post=3.0)
QUICK = dict(warmup=0.5, pre=0.5, outage=1.0, post=1.5)
BACKOFF_BASE, BACKOFF_CAP = 0.01, 1.0   # redis-py's ExponentialWithJitterBackoff defaults
MAX_OPS_PER_THREAD = 5_000_000


@dataclass
class PreforkConfig:
    scope: str = "process"
    processes: int = 8
    threads: int = 25
    max_connections: int = 16
    maxclients: int = 64
    warmup: float = 1.0
    pre: float = 1.0
    outage: float = 2.0
    post: float = 3.0


@dataclass
class PreforkResult:
    cfg: PreforkConfig
    peak_before: Optional[int] = None      # server-side clients, before the kill
    peak_after: Optional[int] = None       # after the restart
    full_after: bool = False               # the server was seen at maxclients after the restart
    rejected_after: int = 0                # connections the restarted server refused (ours only)
    accepted_after: int = 0                # connections it accepted (the pools' and the probes')
    probes_down: int = 0                   # checker probes of all processes while it was down
    down_s: float = 0.0
    first_ok_ms: Optional[float] = None    # first success after the server accepted again
    all_back_ms: Optional[float] = None    # every process has had a success
    ops_pre: int = 0
    ops_post: int = 0
    errors_post: int = 0
    processes_ok: int = 0
    notes: List[str] = field(default_factory=list)


# --------------------------------------------------------------------------- one forked process


def _thread_loop(pool: Any, stop: threading.Event, restart_at: Any, box: Dict[str, Any]) -> None:
    import redis

    client = redis.Redis(connection_pool=pool)
    backoff, failures = 0.0, 0
    for n in range(MAX_OPS_PER_THREAD):
        if stop.is_set():
            return
        try:
            if n % 2:
                client.set(f"k{n % 64}", b"v" * 100)
            else:
                client.get(f"k{n % 64}")
        except redis.RedisError:
            failures += 1
            box["errors"] += 1
            backoff = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(failures, 20))
            stop.wait(random.uniform(0, backoff))
            continue
        failures = 0
        now = time.perf_counter()
        box["ops"] += 1
        r = restart_at.value
        if r and now > r and box["first_ok"] is None:
            box["first_ok"] = now


def _process_main(port: int, cfg: PreforkConfig, restart_at: Any, ctl: Any) -> None:
    import redis_safepool as sp

    logging.getLogger("redis_safepool").addHandler(logging.NullHandler())
    logging.getLogger("redis_safepool").propagate = False
    pools = [sp.SafeConnectionPool(host="127.0.0.1", port=port, scope=cfg.scope,
                                   max_connections=cfg.max_connections, timeout=5,
                                   socket_timeout=5, socket_connect_timeout=2)
             for _ in range(cfg.threads)]
    stop = threading.Event()
    box = {"ops": 0, "errors": 0, "first_ok": None}
    threads = [threading.Thread(target=_thread_loop, args=(p, stop, restart_at, box), daemon=True)
               for p in pools]
    for t in threads:
        t.start()
    ctl.send("ready")
    end = time.monotonic() + 3600
    while time.monotonic() < end:
        if not ctl.poll(1.0):
            continue
        cmd = ctl.recv()
        if cmd == "probes":
            ctl.send((pools[0].stats()["probes"], box["ops"], box["errors"]))
        else:
            break
    stop.set()
    for t in threads:
        t.join(30)
    ctl.send({"ops": box["ops"], "errors": box["errors"], "first_ok": box["first_ok"],
              "hung": sum(t.is_alive() for t in threads)})
    for p in pools:
        p.disconnect()


# --------------------------------------------------------------------------- the scenario


def _ask(ctls: Sequence[Any], cmd: str, timeout: float = 30.0) -> List[Any]:
    for c in ctls:
        c.send(cmd)
    out = []
    for c in ctls:
        out.append(c.recv() if c.poll(timeout) else None)
    return out


def run_prefork(cfg: PreforkConfig) -> PreforkResult:
    res = PreforkResult(cfg=cfg)
    server = RedisServer(maxclients=cfg.maxclients).start()
    ctx = multiprocessing.get_context("fork")  # as gunicorn --preload and Celery prefork do
    restart_at = ctx.Value("d", 0.0, lock=False)
    pipes = [ctx.Pipe() for _ in range(cfg.processes)]
    procs = [ctx.Process(target=_process_main, args=(server.port, cfg, restart_at, child),
                         daemon=True) for _, child in pipes]
    ctls = [parent for parent, _ in pipes]
    for p in procs:  # forked before the sampler's thread exists
        p.start()
    sampler = sw.Sampler(server.port, cfg.maxclients)
    sampler.start()
    try:
        ready = [c.recv() if c.poll(60) else None for c in ctls]
        if ready != ["ready"] * cfg.processes:
            res.notes.append("not every process started")
        time.sleep(cfg.warmup)
        t0 = time.perf_counter()
        before = _ask(ctls, "probes")
        time.sleep(cfg.pre)
        res.ops_pre = sum(b[1] for b in _ask(ctls, "probes") if b) - sum(b[1] for b in before if b)
        t_kill = time.perf_counter()
        res.peak_before = sampler.peak(t0, t_kill)[0]
        server.kill()
        at_kill = _ask(ctls, "probes")
        time.sleep(cfg.outage)
        at_restart = _ask(ctls, "probes")
        res.probes_down = sum(b[0] for b in at_restart if b) - sum(b[0] for b in at_kill if b)
        res.errors_post = -sum(b[2] for b in at_restart if b)
        ops_at_restart = sum(b[1] for b in at_restart if b)
        restart_at.value = time.perf_counter()
        res.down_s = restart_at.value - t_kill
        t_accept, _ours_ok, ours_rejected = sw._restart(server)
        time.sleep(cfg.post)
        t_end = time.perf_counter()
        finals = _ask(ctls, "stop", timeout=60)
        res.peak_after, res.full_after = sampler.peak(t_accept, t_end)
        firsts = [f["first_ok"] for f in finals if f and f["first_ok"] is not None]
        if firsts:
            res.first_ok_ms = (min(firsts) - t_accept) * 1e3
        if len(firsts) == cfg.processes:
            res.all_back_ms = (max(firsts) - t_accept) * 1e3
        res.ops_post = sum(f["ops"] for f in finals if f) - ops_at_restart
        res.errors_post += sum(f["errors"] for f in finals if f)
        res.processes_ok = sum(1 for f in finals if f and f["hung"] == 0)
        rejected_by_sampler = sum(1 for t, _, full in sampler.samples if t >= t_accept and full)
        sampler.stop()
        info, final_ok, final_rejected = sw._final_info(server)
        harness_rejected = ours_rejected + rejected_by_sampler + final_rejected
        res.rejected_after = max(0, int(info.get("rejected_connections", 0)) - harness_rejected)
        harness_accepted = 1 + sampler.accepted + final_ok  # the restart's PING, sampler, INFO
        res.accepted_after = max(0, int(info.get("total_connections_received", 0))
                                 - harness_accepted)
    finally:
        sampler.stop()
        for c in ctls:
            try:
                c.send("stop")
            except OSError:
                pass
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
        server.stop()
        if cfg.scope == "host":
            _remove_segment(server.port)
    return res


def _remove_segment(port: int) -> None:
    """The host budget's segment outlives its processes: remove this run's."""
    import os

    import redis
    from redis_safepool._pool_base import host_segment_name
    from redis_safepool._endpoint_keys import endpoint_of

    kwargs = dict(host="127.0.0.1", port=port, db=0)
    try:
        os.unlink("/dev/shm" + host_segment_name(endpoint_of(redis.Connection, kwargs)[0]))
    except OSError:
        pass


# --------------------------------------------------------------------------- reporting


def _n(x: Optional[float], unit: str = "") -> str:
    return "-" if x is None else f"{x:.0f}{unit}"


def rows(results: Sequence[PreforkResult]) -> List[Tuple[str, List[str]]]:
    def row(name: str, fn: Any) -> Tuple[str, List[str]]:
        return name, [fn(r) for r in results]

    return [
        row("connections the host may hold", lambda r: str(
            r.cfg.max_connections * (r.cfg.processes if r.cfg.scope == "process" else 1))),
        row("peak connections before the kill", lambda r: _n(r.peak_before)),
        row("peak connections after the restart",
            lambda r: _n(r.peak_after) + (" (server full)" if r.full_after else "")),
        row("rejected connections after the restart", lambda r: str(r.rejected_after)),
        row("connections accepted after the restart", lambda r: str(r.accepted_after)),
        row("probes sent while down", lambda r: f"{r.probes_down} in {r.down_s:.1f} s"),
        row("first success after the restart", lambda r: _n(r.first_ok_ms, " ms")),
        row("every process served again after", lambda r: _n(r.all_back_ms, " ms")),
        row("ops/s before the kill", lambda r: f"{r.ops_pre / r.cfg.pre:,.0f}"),
        row("ops/s after the restart", lambda r: f"{r.ops_post / r.cfg.post:,.0f}"),
        row("processes that finished (no hung thread)",
            lambda r: f"{r.processes_ok}/{r.cfg.processes}"),
    ]


def title(results: Sequence[PreforkResult]) -> str:
    c = results[0].cfg
    return (f"Prefork: {c.processes} forked processes x {c.threads} threads, one pool per thread "
            f"(max_connections={c.max_connections}), maxclients={c.maxclients}, "
            f"killed for {c.outage:.0f} s")


def text_table(results: Sequence[PreforkResult]) -> str:
    heads = [f"scope={r.cfg.scope}" for r in results]
    body = rows(results)
    w0 = max(len(n) for n, _ in body)
    widths = [max(len(h), *(len(v[i]) for _, v in body)) for i, h in enumerate(heads)]
    lines = ["  ".join([" " * w0] + [h.rjust(w) for h, w in zip(heads, widths)])]
    for name, vals in body:
        lines.append("  ".join([name.ljust(w0)] + [v.rjust(w) for v, w in zip(vals, widths)]))
    return "\n".join(lines)


def markdown_table(results: Sequence[PreforkResult]) -> str:
    out = ["| | " + " | ".join(f"scope=\"{r.cfg.scope}\"" for r in results) + " |",
           "|---|" + "---|" * len(results)]
    out += [f"| {n} | " + " | ".join(v) + " |" for n, v in rows(results)]
    return "\n".join(out)


def run_both(quick: bool, processes: int = 8, threads: int = 25, max_connections: int = 16,
             maxclients: int = 64) -> List[PreforkResult]:
    phases = QUICK if quick else FULL
    return [run_prefork(PreforkConfig(scope=s, processes=processes, threads=threads,
                                      max_connections=max_connections, maxclients=maxclients,
                                      **phases)) for s in SCOPES]
