"""Which process holds how many connections to a redis-server: the server's CLIENT LIST joined with
/proc's sockets, sampled while a worker runs (for budgets that hold per process)."""

import os
import threading
import time
from typing import Dict, Set, Tuple

SAMPLE_DEADLINE = 120  # seconds a watch samples at most


def _socket_inodes(pid: int) -> Set[int]:
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _local_ports_to(port: int) -> Dict[int, int]:
    """inode -> local port of the established loopback TCP sockets to ``port``."""
    out = {}
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
            if state == "01" and int(remote.split(":")[1], 16) == port:
                out[inode] = int(local.split(":")[1], 16)
    return out


def process_tree(root: int) -> Set[int]:
    pids, todo = set(), [root]
    while todo:
        pid = todo.pop()
        pids.add(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return pids


def _clients_by_port(redis_server) -> Dict[int, int]:
    """The server's own view: client port -> db, from CLIENT LIST."""
    out = {}
    for line in redis_server.command("CLIENT", "LIST").decode(errors="replace").splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "addr" in fields:
            out[int(fields["addr"].rsplit(":", 1)[1])] = int(fields.get("db", 0))
    return out


def connections_by_process(redis_server, root_pid: int) -> Dict[int, Dict[int, int]]:
    """pid -> db -> connections each process of ``root_pid``'s tree holds to the server."""
    clients = _clients_by_port(redis_server)
    ports = _local_ports_to(redis_server.port)
    out: Dict[int, Dict[int, int]] = {}
    for pid in process_tree(root_pid):
        counts: Dict[int, int] = {}
        for inode in _socket_inodes(pid):
            db = clients.get(ports.get(inode, -1))
            if db is not None:
                counts[db] = counts.get(db, 0) + 1
        if counts:
            out[pid] = counts
    return out


class BudgetWatch:
    """Samples, per worker process and db, how many connections the server has from it."""

    def __init__(self, redis_server, worker_pid: int, deadline: float = SAMPLE_DEADLINE) -> None:
        self.server, self.worker_pid, self.deadline = redis_server, worker_pid, deadline
        self.max_seen: Dict[Tuple[int, int], int] = {}
        self.samples = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        for pid, counts in connections_by_process(self.server, self.worker_pid).items():
            for db, n in counts.items():
                self.max_seen[(pid, db)] = max(n, self.max_seen.get((pid, db), 0))
        self.samples += 1

    def _run(self) -> None:
        deadline = time.monotonic() + self.deadline
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                self._sample()
            except (OSError, RuntimeError, ValueError):
                pass  # the server is restarting, or a process just exited
            self.stop.wait(0.02)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


class PeakClients:
    """Samples, from the server's CLIENT LIST, how many connections are named ``name``."""

    def __init__(self, server, name: str) -> None:
        self.server, self.name, self.peak, self.samples = server, name, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for _ in range(100_000):  # bounded; stopped by close()
            if self.stop.is_set():
                return
            try:
                listing = self.server.command("CLIENT", "LIST").decode(errors="replace")
            except (OSError, RuntimeError):
                pass  # restarting
            else:
                n = sum(1 for line in listing.splitlines() if f" name={self.name} " in f" {line} ")
                self.peak, self.samples = max(self.peak, n), self.samples + 1
            self.stop.wait(0.01)

    def close(self) -> int:
        self.stop.set()
        self.thread.join(10)
        assert self.samples > 0
        return self.peak
