"""Real Sentinel (master + replica + 3 sentinels) and 3-master Cluster topologies on loopback."""

from __future__ import annotations

import subprocess
import time
from typing import Callable, Dict, List, Optional, Tuple

import redis
from redis.crc import key_slot

from redis_safepool.testing import LOOPBACK, RedisServer, free_port

SERVICE = "mymaster"


def wait_for(predicate: Callable[[], object], timeout: float, what: str, step: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value (returned) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (redis.exceptions.RedisError, OSError) as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})")
        time.sleep(step)


def plain_client(port: int) -> redis.Redis:
    """A plain redis-py client (not a safe pool) for inspecting a server; close it after use."""
    return redis.Redis(LOOPBACK, port, socket_timeout=2, socket_connect_timeout=2,
                       decode_responses=True, retry=None)


_inspectors: Dict[int, redis.Redis] = {}


def query(port: int, *args: object):
    """Run one command on this module's inspection connection to ``port`` (kept
    open: polling on fresh sockets would churn through ephemeral ports)."""
    client = _inspectors.get(port)
    if client is None:
        client = _inspectors[port] = plain_client(port)
    try:
        return client.execute_command(*args)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        _inspectors.pop(port, None)
        client.close()
        raise


def forget_inspectors(ports) -> None:
    """Close the inspection connections to ``ports`` (at topology teardown)."""
    for port in ports:
        client = _inspectors.pop(port, None)
        if client is not None:
            client.close()


def clients_named(server: RedisServer, name: str) -> int:
    """Connections on ``server`` whose CLIENT SETNAME is ``name`` (counted by the server)."""
    listing = query(server.port, "CLIENT", "LIST")
    return sum(1 for line in listing.splitlines() if f" name={name} " in f" {line} ")


class SentinelTopology:
    """One master, one replica and three sentinels (quorum 2), all processes owned here."""

    def __init__(self, down_after_ms: int = 500, failover_timeout_ms: int = 2000) -> None:
        self.master = RedisServer(repl_diskless_sync_delay=0)
        self.replica = RedisServer(replicaof=f"{LOOPBACK} {self.master.port}",
                                   repl_diskless_sync_delay=0)
        conf = (
            f"sentinel monitor {SERVICE} {LOOPBACK} {self.master.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.sentinels = [
            RedisServer(conf_text=conf, extra_args=["--sentinel"])
            for _ in range(3)
        ]
        for s in self.sentinels:
            s.config.pop("save", None)
            s.config.pop("appendonly", None)

    @property
    def sentinel_addresses(self) -> List[Tuple[str, int]]:
        return [(s.host, s.port) for s in self.sentinels]

    def start(self) -> "SentinelTopology":
        try:
            self.master.start()
            self.replica.start()
            wait_for(lambda: query(self.replica.port, "INFO", "replication")
                     .get("master_link_status") == "up", 20, "replica link up")
            for s in self.sentinels:
                s.start()
            wait_for(self._sentinels_agree, 30, "sentinels to see each other and the replica")
        except BaseException:
            self.stop()
            raise
        return self

    def _sentinels_agree(self) -> bool:
        for s in self.sentinels:
            state = query(s.port, "SENTINEL", "MASTER", SERVICE)
            if isinstance(state, list):
                state = dict(zip(state[::2], state[1::2]))
            if int(state["num-other-sentinels"]) != len(self.sentinels) - 1:
                return False
            if int(state["num-slaves"]) < 1:
                return False
        return True

    def master_port_by_sentinels(self) -> Optional[int]:
        """The master port if every live sentinel reports the same one, else None."""
        ports = set()
        for s in self.sentinels:
            if not s.running:
                continue
            addr = query(s.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            ports.add(int(addr[1]) if addr else None)
        return ports.pop() if len(ports) == 1 else None

    def server_on(self, port: int) -> RedisServer:
        return self.master if port == self.master.port else self.replica

    def wait_failover_to(self, server: RedisServer, timeout: float = 30.0) -> None:
        """Block until all sentinels name ``server`` master and it reports role master."""
        wait_for(lambda: self.master_port_by_sentinels() == server.port
                 and query(server.port, "ROLE")[0] == "master", timeout,
                 f"failover to {server.port}")

    def stop(self) -> None:
        servers = self.sentinels + [self.replica, self.master]
        forget_inspectors([s.port for s in servers])
        for s in servers:
            s.stop()

    def __enter__(self) -> "SentinelTopology":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ClusterTopology:
    """Three cluster masters without replicas; a dead node's slots stay uncovered."""

    def __init__(self, masters: int = 3, node_timeout_ms: int = 1000) -> None:
        self.nodes = [
            RedisServer(cluster_enabled="yes", cluster_config_file="nodes.conf",
                        cluster_node_timeout=node_timeout_ms,
                        cluster_port=free_port(),  # bus port; port+10000 may not exist
                        cluster_require_full_coverage="no")
            for _ in range(masters)
        ]

    def start(self) -> "ClusterTopology":
        try:
            for n in self.nodes:
                n.start()
            cmd = ["redis-cli", "--cluster", "create"]
            cmd += [f"{n.host}:{n.port}" for n in self.nodes]
            cmd += ["--cluster-replicas", "0", "--cluster-yes"]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=60)
            wait_for(self._all_ok, 30, "cluster_state:ok on every node")
        except BaseException:
            self.stop()
            raise
        return self

    def _all_ok(self) -> bool:
        for n in self.nodes:
            if not n.running:
                continue
            info = query(n.port, "CLUSTER", "INFO")
            if "cluster_state:ok" not in info:
                return False
            if f"cluster_known_nodes:{len(self.nodes)}" not in info:
                return False
        return True

    def node_for_key(self, key: str, slots: Optional[list] = None) -> RedisServer:
        """The node that serves ``key`` (CRC16 slot, owner from CLUSTER SLOTS)."""
        slot = key_slot(key.encode())
        for start, end, master, *_ in slots or query(self.nodes[0].port, "CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                port = int(master[1])
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def keys_per_node(self, per_node: int = 4) -> dict:
        """``{port: [keys...]}`` with ``per_node`` keys hashed onto each node."""
        out = {n.port: [] for n in self.nodes}
        slots = query(self.nodes[0].port, "CLUSTER", "SLOTS")
        i = 0
        while any(len(v) < per_node for v in out.values()):
            key = f"k{i}"
            i += 1
            port = self.node_for_key(key, slots).port
            if len(out[port]) < per_node:
                out[port].append(key)
            if i > 10000:
                raise AssertionError("could not spread keys over all nodes")
        return out

    def stop(self) -> None:
        forget_inspectors([n.port for n in self.nodes])
        for n in self.nodes:
            n.stop()

    def __enter__(self) -> "ClusterTopology":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
