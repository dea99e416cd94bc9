"""Throwaway redis-server processes on free loopback ports, for tests, demos and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Dict, List, Optional, Sequence

__all__ = ["RedisServer", "free_port", "redis_server_path"]

LOOPBACK = "127.0.0.1"


def redis_server_path() -> str:
    """Return the redis-server binary, or raise a clear error if none is installed."""
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if path is None:
        raise RuntimeError(
            "redis-server is not installed; run `make test` (it installs Debian's "
            "redis-server with apt-get) or `apt-get install redis-server`"
        )
    return path


_handed_out: set = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and that this process
    has not been given before: the pool's endpoints outlive a test (``configure()`` pins
    one for the process), so a server on a port used before would meet the budget and
    health state another server left."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no loopback port left that this process has not used")


def _resp_end(data: bytes, pos: int = 0) -> int:
    """Index just past the complete RESP reply starting at ``pos``, or -1 if incomplete."""
    eol = data.find(b"\r\n", pos)
    if eol < 0:
        return -1
    kind, header = data[pos:pos + 1], data[pos + 1:eol]
    end = eol + 2
    if kind in (b"$", b"=", b"!"):  # bulk string, verbatim string, bulk error
        length = int(header)
        if length < 0:
            return end
        return end + length + 2 if len(data) >= end + length + 2 else -1
    if kind in (b"*", b"~", b">", b"%", b"|"):  # aggregates (maps count pairs)
        count = int(header)
        if kind in (b"%", b"|"):
            count *= 2
        for _ in range(max(count, 0)):
            end = _resp_end(data, end)
            if end < 0:
                return -1
        return end
    return end  # simple string, error, integer, null, double, boolean, big number


def _client_socket_states(port: int) -> Dict[int, str]:
    """The server's TCP sockets on ``port`` (listeners aside) by client port, with their
    state from /proc/net/tcp{,6} ("01": ESTABLISHED)."""
    local = f":{port:04X}"
    states: Dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[1].endswith(local) and fields[3] != "0A":
                        states[int(fields[2].rsplit(":", 1)[1], 16)] = fields[3]
        except (FileNotFoundError, StopIteration):
            continue
    return states


def _gone_client_ports(before: Dict[int, str], after: Dict[int, str], listed: set) -> set:
    """Listed clients whose client end is closed: their server socket is past ESTABLISHED
    (it has our FIN) in either sample, or it is in neither sample at all (a reset: the
    kernel drops a reset socket from its tables at once, while redis-server still lists
    it until it reads the error)."""
    closed = {p for states in (before, after) for p, s in states.items() if s != "01"}
    return closed | (listed - before.keys() - after.keys())


def _listed_ports(raw: str) -> set:
    ports = set()
    for line in raw.split("\r\n", 1)[-1].splitlines():
        for f in line.split(" "):
            if f.startswith("addr="):
                tail = f.rsplit(":", 1)[-1]
                if tail.isdigit() and tail != "0":  # port 0: a unix socket client
                    ports.add(int(tail))
    return ports


def _count_clients(raw: str, gone: set) -> int:
    """Clients in a ``CLIENT LIST`` reply, less the query itself, those flagged ``A`` (being
    freed) and those whose client port is in ``gone``."""
    count = 0
    for line in raw.split("\r\n", 1)[1].splitlines():
        if not line.startswith("id="):
            continue
        fields = dict(f.split("=", 1) for f in line.split(" ") if "=" in f)
        if fields.get("cmd") == "client|list" or "A" in fields.get("flags", ""):
            continue
        addr = fields.get("addr", "")
        if addr.rsplit(":", 1)[-1].isdigit() and int(addr.rsplit(":", 1)[1]) in gone:
            continue
        count += 1
    return count


def _command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one inline command over a raw socket and return the complete raw reply."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        s.sendall((" ".join(args) + "\r\n").encode())
        data = b""
        while _resp_end(data) < 0:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _server_env() -> Dict[str, str]:
    """The environment for redis-server: without the sanitizer runtime the tests may preload."""
    return {k: v for k, v in os.environ.items()
            if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")}


class RedisServer:
    """One redis-server on a loopback port, owned by this object.

    Every option in ``config`` is passed as ``--key value``. The server keeps
    its port across ``kill()``/``start()`` so clients can reconnect to it.
    ``conf_text`` (optional) is written to ``redis.conf`` in the server's
    directory and given as the config file (needed by ``--sentinel``, which
    rewrites it); ``extra_args`` (e.g. ``["--sentinel"]``) follow it.
    """

    def __init__(self, port: Optional[int] = None, *, conf_text: Optional[str] = None,
                 extra_args: Sequence[str] = (), **config: object) -> None:
        self.host = LOOPBACK
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="safepool-redis-")
        self.config: Dict[str, object] = {
            "save": "",
            "appendonly": "no",
            "maxclients": 10000,
        }
        self.config.update(config)
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = os.path.join(self.dir, "redis.log")
        self.conf_path: Optional[str] = None
        if conf_text is not None:
            self.conf_path = os.path.join(self.dir, "redis.conf")
            with open(self.conf_path, "w") as f:
                f.write(conf_text)
        self.extra_args: List[str] = list(extra_args)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def argv(self) -> List[str]:
        argv = [redis_server_path()]
        if self.conf_path is not None:
            argv.append(self.conf_path)
        argv += self.extra_args
        argv += ["--port", str(self.port), "--bind", self.host,
                "--dir", self.dir, "--logfile", self.log_path, "--daemonize", "no"]
        for key, value in self.config.items():
            key = key.replace("_", "-")
            argv += [f"--{key}", str(value)]
        return argv

    def start(self, wait: float = 10.0, any_answer: bool = False) -> "RedisServer":
        """Start the server and wait until it answers PING with PONG (`any_answer`: any
        reply, such as a full server's "-ERR max number of clients reached", will do)."""
        if self.running:
            return self
        self.proc = subprocess.Popen(
            self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=_server_env(),
        )
        deadline = time.monotonic() + wait
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {err}")
            try:
                reply = _command(self.port, "PING", timeout=0.5)
                if reply.startswith(b"+PONG") or (any_answer and reply[:1] in (b"+", b"-")):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING")
            time.sleep(0.01)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the server (a crash: clients see resets/EOF) and reap it."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self) -> "RedisServer":
        self.kill()
        return self.start()

    def command(self, *args: str) -> bytes:
        """Send an inline command on a fresh socket (not counted by any pool)."""
        return _command(self.port, *args)

    def info(self, section: str = "") -> Dict[str, str]:
        raw = self.command("INFO", section) if section else self.command("INFO")
        out: Dict[str, str] = {}
        for line in raw.decode(errors="replace").splitlines()[1:]:
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v.strip()
        return out

    def live_clients(self) -> int:
        """Clients the server holds that their client has not closed.

        ``CLIENT LIST`` (one consistent view) minus this query, minus clients the
        server is already freeing (flag ``A``) and minus sockets whose client end
        is closed: the server's socket is past ESTABLISHED (it has our FIN), or
        gone from the kernel's tables (reset), but redis-server may notice only
        after it accepted a newer connection, so a socket closed and another
        opened in its place can both be listed for one event-loop turn. Those are
        sampled just before and after the query; a socket the client never
        closed is always counted.
        """
        before = _client_socket_states(self.port)
        raw = self.command("CLIENT", "LIST").decode(errors="replace")
        after = _client_socket_states(self.port)
        return _count_clients(raw, _gone_client_ports(before, after, _listed_ports(raw)))

    def unfreed_closes(self) -> int:
        """Clients that closed their end whose socket the server has not closed yet (CLOSE_WAIT):
        it still counts them against ``maxclients`` until it reads their FIN."""
        return sum(1 for state in _client_socket_states(self.port).values() if state == "08")

    def listed_clients(self) -> int:
        """``CLIENT LIST`` less this query and the clients being freed (flag ``A``): cheaper
        than ``live_clients()``, and it may count a client we closed a moment ago."""
        return _count_clients(self.command("CLIENT", "LIST").decode(errors="replace"), set())

    def connected_clients(self) -> int:
        """Established client connections, counted by the server, minus this query's own."""
        return int(self.info("clients")["connected_clients"]) - 1

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<RedisServer {self.host}:{self.port} running={self.running}>"
