"""The incident replay's machinery: one scenario = a server, many retrying workers, a kill, a restart, numbers."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import redis
import redis.connection
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from redis_safepool.testing import RedisServer, _resp_end, _server_env

CP = "ConnectionPool"
BCP = "BlockingConnectionPool"
SAFE = "SafeConnectionPool"
KINDS: Tuple[str, ...] = (CP, BCP, SAFE)
PER_WORKER = "per-worker"
SHARED = "shared"
MODES: Tuple[str, ...] = (PER_WORKER, SHARED)

VALUE = b"v" * 100
KEYS = 64
MAX_OPS_PER_WORKER = 5_000_000   # hard bound on every worker loop besides its stop event
MAX_ERRORS_KEPT = 20_000         # error records kept per worker (all are counted)
SAMPLE_EVERY = 0.01              # server-side connection count sampling period (s)
RECOVERY_WINDOW = 0.5            # throughput is "back" when a window this long reaches 90%
JOIN_SLACK = 30.0                # a worker still running this long after stop is "hung"


@dataclass
class Config:
    """One scenario: which pool, how it is shared, how many workers, the phase lengths."""

    kind: str
    mode: str
    workers: int = 200
    max_connections: int = 16
    maxclients: int = 64
    warmup: float = 1.0          # load before the measured pre-outage window
    pre: float = 1.5             # pre-outage throughput window (s)
    outage: float = 2.0          # server down (s)
    post: float = 3.5            # after the server accepts again (s)
    bucket: float = 0.05         # throughput histogram resolution (s)
    pool_timeout: float = 5.0    # BCP / Safe wait for a free connection
    socket_timeout: float = 5.0
    connect_timeout: float = 2.0
    conn_retries: int = 0        # redis-py Retry inside each connection (0: pools' default)
    backoff_base: float = 0.01   # app-level retry: redis-py's ExponentialWithJitterBackoff
    backoff_cap: float = 1.0


# --------------------------------------------------------------------------- counting connects


class ConnectCounter:
    """Counts every redis-py socket connect attempt (all three pools use redis.Connection)."""

    def __init__(self) -> None:
        self.times: List[float] = []
        self._orig: Any = None

    def __enter__(self) -> "ConnectCounter":
        cls = redis.connection.Connection
        self._orig = orig = cls._connect
        times = self.times

        def counted_connect(conn: Any) -> Any:
            times.append(time.perf_counter())  # list.append is atomic under the GIL
            return orig(conn)

        cls._connect = counted_connect
        return self

    def __exit__(self, *exc: object) -> None:
        redis.connection.Connection._connect = self._orig

    def between(self, start: float, end: float) -> int:
        return sum(1 for t in list(self.times) if start <= t < end)


# --------------------------------------------------------------------------- server-side sampling


_DEATH_WATCH = r'''
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"PING\r\n")
assert s.recv(64).startswith(b"+PONG")
s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
try:
    while s.recv(4096):
        pass
except OSError:
    pass
print(repr(time.perf_counter()), flush=True)
'''


class DeathWatch:
    """When the server died: a separate process, blocked in recv() on its own socket, notes the EOF.

    SIGKILL is not death: the kernel takes about a millisecond to tear the
    process down, and the server answers until then. The harness's own
    threads would notice late (they wait for the GIL behind 200 workers);
    this process has no such queue, and its ``time.perf_counter()`` is
    CLOCK_MONOTONIC, the same clock as ours. It holds one connection.
    """

    def __init__(self, port: int, limit: float = 120.0) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _DEATH_WATCH, str(port), str(limit)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError("the death watch could not connect")

    @staticmethod
    def usable() -> bool:
        return "CLOCK_MONOTONIC" in time.get_clock_info("perf_counter").implementation

    def died_at(self, timeout: float = 10.0) -> Optional[float]:
        """perf_counter() of the server's EOF (None if it did not come)."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
            return float(out.strip())
        except (subprocess.TimeoutExpired, ValueError):
            self.close()
            return None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Sampler(threading.Thread):
    """Polls INFO clients on its own raw socket, opened before the load and reopened after a restart.

    When the server is full the sampler itself may be refused; that sample
    says "connected_clients == maxclients" and is recorded as ``full``.
    """

    def __init__(self, port: int, maxclients: int) -> None:
        super().__init__(name="storm-sampler", daemon=True)
        self.port = port
        self.maxclients = maxclients
        self.harness = 1       # the harness's connections counted by the server (this one, ...)
        self.samples: List[Tuple[float, Optional[int], bool]] = []  # (t, clients or None, full)
        self.accepted = 0      # sampler connections the server accepted
        self.rejected = 0      # sampler connections refused with "max number of clients"
        self.latest: Optional[int] = None
        self._halt = threading.Event()
        self._sock: Optional[socket.socket] = None
        self._fresh = False
        self.connect()

    def connect(self) -> bool:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
        except OSError:
            return False
        self._sock = s
        self._fresh = True
        return True

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def _query(self) -> Tuple[Optional[int], bool]:
        """(connected_clients minus the harness's, full?) or (None, False) when unreachable."""
        if self._sock is None and not self.connect():
            return None, False
        s = self._sock
        try:
            s.sendall(b"INFO clients\r\n")
            data = b""
            while _resp_end(data) < 0:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                data += chunk
        except OSError:
            self._drop()
            return None, False
        if data.startswith(b"-ERR max number of clients"):
            self.rejected += 1
            self._drop()
            return None, True
        if self._fresh:
            self.accepted += 1
            self._fresh = False
        for line in data.decode(errors="replace").splitlines():
            if line.startswith("connected_clients:"):
                clients = int(line.split(":", 1)[1])
                return clients - self.harness, clients >= self.maxclients
        return None, False

    def run(self) -> None:
        end = time.monotonic() + 3600  # bounded even if nobody stops us
        while not self._halt.is_set() and time.monotonic() < end:
            count, full = self._query()
            self.latest = count
            self.samples.append((time.perf_counter(), count, full))
            self._halt.wait(SAMPLE_EVERY)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        self._drop()

    def peak(self, start: float, end: float) -> Tuple[Optional[int], bool]:
        """Highest count sampled in [start, end) and whether the server was seen full."""
        counts = [c for t, c, _ in self.samples if start <= t < end and c is not None]
        full = any(f for t, _, f in self.samples if start <= t < end)
        return (max(counts) if counts else None), full


# --------------------------------------------------------------------------- pools and workers


def make_pool(cfg: Config, port: int) -> Any:
    """A pool of ``cfg.kind`` with the same settings for all three kinds."""
    kw: Dict[str, Any] = dict(host="127.0.0.1", port=port, max_connections=cfg.max_connections,
                              socket_timeout=cfg.socket_timeout,
                              socket_connect_timeout=cfg.connect_timeout)
    if cfg.conn_retries:
        kw["retry"] = Retry(ExponentialWithJitterBackoff(base=cfg.backoff_base,
                                                         cap=cfg.backoff_cap), cfg.conn_retries)
    if cfg.kind == CP:
        return redis.ConnectionPool(**kw)
    if cfg.kind == BCP:
        return redis.BlockingConnectionPool(timeout=cfg.pool_timeout, **kw)
    if cfg.kind == SAFE:
        from redis_safepool import SafeConnectionPool
        return SafeConnectionPool(timeout=cfg.pool_timeout, **kw)
    raise ValueError(f"unknown pool kind {cfg.kind!r}")


class Worker:
    """GET/SET in a loop; on an error, back off like redis-py's ExponentialWithJitterBackoff and retry."""

    def __init__(self, index: int, client: redis.Redis, cfg: Config, t0: float, slots: int) -> None:
        self.index = index
        self.client = client
        self.cfg = cfg
        self.t0 = t0
        self.ok_buckets = [0] * slots
        self.ops = 0
        self.error_count = 0
        self.errors: List[Tuple[float, float, str]] = []   # (start, seconds to fail, type)
        self.first_ok_after: Optional[float] = None        # end of the first success issued after `mark`
        self.mark = float("inf")
        self.done = False

    def run(self, stop: threading.Event) -> None:
        cfg, client = self.cfg, self.client
        key = f"storm:{self.index % KEYS}"
        backoff = ExponentialWithJitterBackoff(base=cfg.backoff_base, cap=cfg.backoff_cap)
        failures = 0
        buckets, slots, t0, width = self.ok_buckets, len(self.ok_buckets), self.t0, cfg.bucket
        perf = time.perf_counter
        for n in range(MAX_OPS_PER_WORKER):
            if stop.is_set():
                break
            start = perf()
            try:
                if n & 1:
                    client.set(key, VALUE)
                else:
                    client.get(key)
            except Exception as exc:  # every failure is data; the worker carries on
                end = perf()
                self.error_count += 1
                if len(self.errors) < MAX_ERRORS_KEPT:
                    self.errors.append((start, end - start, type(exc).__name__))
                failures += 1
                stop.wait(backoff.compute(failures))
                continue
            end = perf()
            failures = 0
            self.ops += 1
            i = int((end - t0) / width)
            if 0 <= i < slots:
                buckets[i] += 1
            if self.first_ok_after is None and start >= self.mark:
                self.first_ok_after = end
        self.done = True


# --------------------------------------------------------------------------- one scenario


@dataclass
class Result:
    """What one scenario measured (times in seconds; None: not observed)."""

    kind: str
    mode: str
    cfg: Config
    peak_before: Optional[int] = None
    full_before: bool = False
    peak_after: Optional[int] = None
    full_after: bool = False
    accepted_after: Optional[int] = None
    rejected_after: Optional[int] = None
    attempts_down: int = 0
    attempts_after: int = 0
    probes_down: Optional[int] = None
    errors_before: int = 0        # errors before the kill (e.g. redis-py against maxclients)
    error_types_before: Dict[str, int] = field(default_factory=dict)
    outage_errors: int = 0
    errors_after: int = 0         # errors after the server accepts again
    down_attempt_offsets: List[float] = field(default_factory=list)  # s after the kill (first 50)
    outage_error_types: Dict[str, int] = field(default_factory=dict)
    fail_p50: Optional[float] = None
    fail_p99: Optional[float] = None
    fail_max: Optional[float] = None
    fail_p999: Optional[float] = None
    issued_down: int = 0                      # commands issued while down (the ones timed above)
    fail_over_1ms: int = 0                    # of them, how many took over 1 ms / over 5 ms
    fail_over_5ms: int = 0
    in_flight_failed: int = 0                 # commands in flight at the death that then failed
    in_flight_max: Optional[float] = None     # the last of them failed this long after the death
    died_after: float = 0.0                   # SIGKILL to the server's sockets closing (s)
    first_ok: Optional[float] = None
    pre_rate: float = 0.0
    post_rate: float = 0.0
    recovered_in: Optional[float] = None
    hung: int = 0
    ops: int = 0
    errors: int = 0
    safe_stats: Dict[str, Any] = field(default_factory=dict)
    restart_seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.kind} / {self.mode}"


def _percentile(sorted_values: List[float], q: float) -> Optional[float]:
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), int(round(q / 100.0 * len(sorted_values) + 0.5))))
    return sorted_values[rank - 1]


def _final_info(server: RedisServer, timeout: float = 5.0) -> Tuple[Dict[str, str], int, int]:
    """INFO stats once the load is gone: (info, our accepted connections, our rejected ones)."""
    accepted = rejected = 0
    deadline = time.monotonic() + timeout
    while True:
        try:
            raw = server.command("INFO", "stats")
        except OSError:
            raw = b""
        if raw.startswith(b"-ERR max number of clients"):
            rejected += 1
        elif raw:
            accepted += 1
            out = {}
            for line in raw.decode(errors="replace").splitlines():
                if ":" in line and not line.startswith("#"):
                    k, v = line.split(":", 1)
                    out[k] = v.strip()
            return out, accepted, rejected
        if time.monotonic() > deadline:
            return {}, accepted, rejected
        time.sleep(0.02)


def _safe_endpoint_stats(port: int) -> Dict[str, Any]:
    try:
        import redis_safepool
    except ImportError:
        return {}
    for label, st in redis_safepool.stats().items():
        if f":{port}/" in label:
            return st
    return {}


def _restart(server: RedisServer, wait: float = 10.0) -> Tuple[float, int, int]:
    """Start the killed server again; return (when it first accepted a TCP connection, ours ok, ours rejected).

    ``RedisServer.start()`` would poll PING every 10 ms and give up if a
    storm filled the server first; this polls a TCP connect every ms and
    then asks the first socket's PING whether it was let in.
    """
    server.proc = subprocess.Popen(server.argv(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=_server_env())
    deadline = time.monotonic() + wait
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=1.0)
            break
        except OSError:
            if time.monotonic() > deadline or server.proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {server.port} did not come back")
            time.sleep(0.001)
    t_accept = time.perf_counter()
    with sock:
        try:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
        except OSError:
            reply = b""
    if reply.startswith(b"+PONG"):
        return t_accept, 1, 0
    return t_accept, 0, 1 if reply.startswith(b"-ERR max number of clients") else 0


Progress = Callable[[str, float, Dict[str, Any]], None]


def run_scenario(cfg: Config, progress: Optional[Progress] = None) -> Result:
    """Start a server, load it with ``cfg.workers`` workers, kill it, restart it, measure."""
    res = Result(kind=cfg.kind, mode=cfg.mode, cfg=cfg)
    server = RedisServer(maxclients=cfg.maxclients)
    server.start()
    try:
        with ConnectCounter() as counter:
            _run(cfg, server, counter, res, progress or (lambda *a: None))
    finally:
        server.stop()
    return res


@dataclass
class _Timeline:
    """When each phase of one replay began (``time.perf_counter()`` seconds)."""

    t0: float                      # the load started
    kill: float = 0.0              # SIGKILL sent
    down: float = 0.0              # the server's sockets closed (the death watch), or kill
    accept: float = 0.0            # the restarted server accepted a connect
    end: float = 0.0               # the load stopped
    probes_at_kill: Optional[int] = None
    probes_at_accept: Optional[int] = None
    harness_ok: int = 0            # the restart poller's own accepted / rejected connects
    harness_rej: int = 0


def _run(cfg: Config, server: RedisServer, counter: ConnectCounter, res: Result,
         progress: Progress) -> None:
    """One replay: load, kill, outage, restart, then the tallies."""
    sampler = Sampler(server.port, cfg.maxclients)
    death = DeathWatch(server.port) if DeathWatch.usable() else None
    sampler.harness += death is not None
    pools, workers = _start_load(cfg, server.port)
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop,), name=f"storm-{w.index}", daemon=True)
               for w in workers]
    sampler.start()
    when = _Timeline(t0=workers[0].t0)
    try:
        for t in threads:
            t.start()
        _kill_and_restart(cfg, server, workers, sampler, death, when, res, progress)
    finally:
        if death is not None:
            death.close()
        stop.set()
        join_by = time.monotonic() + JOIN_SLACK
        for t in threads:
            t.join(timeout=max(0.0, join_by - time.monotonic()))
        res.hung = sum(1 for t in threads if t.is_alive())
        if cfg.kind == SAFE:
            res.safe_stats = _safe_endpoint_stats(server.port)
        for p in pools:
            try:
                (p.close if hasattr(p, "close") else p.disconnect)()
            except Exception:
                p.disconnect()
        sampler.stop()
    _tally_server(server, sampler, when, res)
    _tally_clients(counter, workers, when, res)
    _tally_errors(workers, when, res)
    _throughput(cfg, workers, when.t0, when.kill, when.accept, when.end, res)


def _start_load(cfg: Config, port: int) -> Tuple[List[Any], List["Worker"]]:
    """The pools (one shared, or one per worker) and the workers over them."""
    total = cfg.warmup + cfg.pre + cfg.outage + cfg.post + 2.0
    slots = int(total / cfg.bucket) + 1
    t0 = time.perf_counter()
    if cfg.mode == SHARED:
        shared = make_pool(cfg, port)
        pools = [shared]
        clients = [redis.Redis(connection_pool=shared) for _ in range(cfg.workers)]
    else:
        pools = [make_pool(cfg, port) for _ in range(cfg.workers)]
        clients = [redis.Redis(connection_pool=p) for p in pools]
    return pools, [Worker(i, c, cfg, t0, slots) for i, c in enumerate(clients)]


def _kill_and_restart(cfg: Config, server: RedisServer, workers: List["Worker"], sampler: Sampler,
                      death: Optional[DeathWatch], when: _Timeline, res: Result,
                      progress: Progress) -> None:
    """The phases, each noted in ``when``: load, kill, outage, restart, after."""

    def live(phase: str, until: float) -> None:
        """Let the phase run until ``until`` (perf_counter), reporting progress meanwhile."""
        while True:
            now = time.perf_counter()
            progress(phase, now - when.t0, {
                "ops": sum(w.ops for w in workers),
                "errors": sum(w.error_count for w in workers),
                "conns": sampler.latest,
                "state": _safe_endpoint_stats(server.port).get("state") if cfg.kind == SAFE else None,
            })
            if now >= until:
                return
            time.sleep(min(0.1, until - now))

    live("load", when.t0 + cfg.warmup + cfg.pre)
    when.kill = time.perf_counter()
    when.probes_at_kill = _safe_endpoint_stats(server.port).get("probes")
    server.kill()
    for w in workers:
        w.mark = time.perf_counter()  # reaped: no command can succeed before the restart
    t_down = death.died_at() if death is not None else None
    sampler.harness = 1
    if t_down is None or not when.kill <= t_down <= time.perf_counter():
        t_down = when.kill
    when.down = t_down
    res.died_after = when.down - when.kill
    live("outage", when.kill + cfg.outage)
    t_spawn = time.perf_counter()
    when.accept, when.harness_ok, when.harness_rej = _restart(server)
    res.restart_seconds = when.accept - t_spawn
    when.probes_at_accept = _safe_endpoint_stats(server.port).get("probes")
    live("restarted", when.accept + cfg.post)
    when.end = time.perf_counter()


def _tally_server(server: RedisServer, sampler: Sampler, when: _Timeline, res: Result) -> None:
    """What the server saw: peaks before and after, connections accepted and rejected after."""
    res.peak_before, res.full_before = sampler.peak(when.t0, when.kill)
    res.peak_after, res.full_after = sampler.peak(when.accept, when.end + 1)
    info, own_ok, own_rej = _final_info(server)
    if info:
        # ours: the restart poller's socket, the sampler's reconnects, this INFO
        ours_ok = when.harness_ok + max(0, sampler.accepted - 1) + own_ok
        res.accepted_after = int(info["total_connections_received"]) - ours_ok
        res.rejected_after = (int(info["rejected_connections"]) - when.harness_rej
                              - sampler.rejected - own_rej)


def _tally_clients(counter: ConnectCounter, workers: List["Worker"], when: _Timeline,
                   res: Result) -> None:
    """What the clients did: connect attempts and probes while down, first success, totals."""
    res.attempts_down = counter.between(when.down, when.accept)
    res.attempts_after = counter.between(when.accept, when.end + 1)
    if when.probes_at_kill is not None and when.probes_at_accept is not None:
        res.probes_down = when.probes_at_accept - when.probes_at_kill
    res.down_attempt_offsets = [t - when.down for t in list(counter.times)
                                if when.down <= t < when.accept][:50]
    firsts = [w.first_ok_after for w in workers if w.first_ok_after is not None]
    res.first_ok = min(firsts) - when.accept if firsts else None
    res.ops = sum(w.ops for w in workers)
    res.errors = sum(w.error_count for w in workers)


def _tally_errors(workers: List["Worker"], when: _Timeline, res: Result) -> None:
    """Errors before, during and after the outage; how fast commands issued while down failed.

    An error belongs to the outage when it surfaced after the kill; commands
    issued once the server was dead are timed apart from those in flight then.
    """
    errs = [(s, d, kind) for w in workers for (s, d, kind) in w.errors]
    before = [kind for s, d, kind in errs if s + d < when.kill]
    res.errors_before = len(before)
    for kind in before:
        res.error_types_before[kind] = res.error_types_before.get(kind, 0) + 1
    res.errors_after = sum(1 for s, d, _ in errs if s + d >= when.accept)
    outage = [(s, d, kind) for s, d, kind in errs if when.kill <= s + d < when.accept]
    res.outage_errors = len(outage)
    for _, _, kind in outage:
        res.outage_error_types[kind] = res.outage_error_types.get(kind, 0) + 1
    issued = sorted(d for s, d, _ in outage if s >= when.down)
    res.fail_p50 = _percentile(issued, 50)
    res.fail_p99 = _percentile(issued, 99)
    res.fail_max = issued[-1] if issued else None
    res.fail_p999 = _percentile(issued, 99.9)
    res.issued_down = len(issued)
    res.fail_over_1ms = sum(1 for d in issued if d > 0.001)
    res.fail_over_5ms = sum(1 for d in issued if d > 0.005)
    in_flight = [s + d - when.down for s, d, _ in errs if s < when.down <= s + d]
    res.in_flight_failed = len(in_flight)
    res.in_flight_max = max(in_flight) if in_flight else None


def _throughput(cfg: Config, workers: List[Worker], t0: float, t_kill: float, t_accept: float,
                t_end: float, res: Result) -> None:
    """Pre-outage rate, post-restart rate, and when a RECOVERY_WINDOW first got back to 90% of it."""
    width = cfg.bucket
    slots = len(workers[0].ok_buckets)
    hist = [sum(w.ok_buckets[i] for w in workers) for i in range(slots)]
    k_kill = int((t_kill - t0) / width)
    k_pre = max(0, k_kill - int(round(cfg.pre / width)))
    pre = hist[k_pre:k_kill]
    res.pre_rate = sum(pre) / (len(pre) * width) if pre else 0.0
    k_acc = int((t_accept - t0) / width)
    k_end = min(slots, int((t_end - t0) / width))
    tail = hist[max(k_acc, k_end - int(round(1.0 / width))):k_end]
    res.post_rate = sum(tail) / (len(tail) * width) if tail else 0.0
    win = max(1, int(round(RECOVERY_WINDOW / width)))
    if res.pre_rate <= 0:
        return
    for k in range(k_acc, k_end - win + 1):
        if sum(hist[k:k + win]) / (win * width) >= 0.9 * res.pre_rate:
            res.recovered_in = max(0.0, t0 + (k + win) * width - t_accept)
            return


def jitter_seed(seed: Optional[int]) -> None:
    """Make the workers' backoff jitter repeatable (redis-py draws from ``random``)."""
    if seed is not None:
        random.seed(seed)
