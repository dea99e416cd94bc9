"""SafeRedisCluster against a real 3-master cluster: per-node budgets, a dead node pauses only itself."""

from __future__ import annotations

import collections
import socket
import threading

import pytest
import redis
from redis.cluster import ClusterNode

import redis_safepool as sp
from redis_safepool.cluster import SafeRedisCluster, node_pools, safe_cluster

from topology import ClusterTopology, clients_named, wait_for

NAME = "safepool-cluster-test"


@pytest.fixture
def cluster():
    with ClusterTopology(masters=3, node_timeout_ms=1000) as c:
        yield c


def _client(cluster, **kw):
    kw.setdefault("max_connections", 4)
    kw.setdefault("timeout", 10)
    kw.setdefault("client_name", NAME)
    kw.setdefault("socket_timeout", 2)
    kw.setdefault("socket_connect_timeout", 1)
    first = cluster.nodes[0]
    return SafeRedisCluster(host=first.host, port=first.port, **kw)


def _state(pool):
    return sp.stats()[pool.endpoint]["state"]


def test_every_node_pool_is_a_safe_pool(cluster):
    SafePool = sp.SafeConnectionPool
    clients = [
        _client(cluster),
        safe_cluster(f"redis://127.0.0.1:{cluster.nodes[1].port}", max_connections=4),
        SafeRedisCluster(startup_nodes=[ClusterNode(n.host, n.port) for n in cluster.nodes],
                         max_connections=4),
        SafeRedisCluster.from_url(cluster.nodes[2].url, max_connections=4),
    ]
    try:
        for rc in clients:
            assert rc.set("k", "v") and rc.get("k") == b"v"
            pools = node_pools(rc)
            assert len(pools) == 3
            assert all(isinstance(p, SafePool) for p in pools.values())
            startup = [n.redis_connection.connection_pool
                       for n in rc.nodes_manager.startup_nodes.values() if n.redis_connection]
            assert all(isinstance(p, SafePool) for p in startup)
            for name, pool in pools.items():
                assert name.split(":")[1] in pool.endpoint and pool.max_connections == 4
    finally:
        for rc in clients:
            rc.close()


def test_no_idle_connection_closed_behind_the_budget(cluster):
    """A cluster client's constructor refreshes the topology and updates every node pool's
    maintenance-notification settings; redis-py disconnects idle connections on both paths.
    Each must leave the pool through the budget, never stay idle with its socket closed."""
    clients = [_client(cluster), SafeRedisCluster.from_url(cluster.nodes[2].url, max_connections=4)]
    try:
        for rc in clients:
            assert rc.set("k", "v") and rc.get("k") == b"v"
            pools = list(node_pools(rc).values())
            pools += [n.redis_connection.connection_pool
                      for n in rc.nodes_manager.startup_nodes.values() if n.redis_connection]
            for pool in pools:
                closed = [c for c in pool._idle_list() if c._sock is None]
                assert not closed, (pool.endpoint, closed)
    finally:
        for rc in clients:
            rc.close()


def test_topology_refresh_closes_idle_through_the_budget(redis_server, make_pool, wait_until):
    """redis-py's topology refresh calls ``disconnect_free_connections()`` on every startup
    node's pool. Idle connections must leave through the budget: a record left idle under a
    closed fd would make the checker shut down whichever new socket reuses the number (a
    fresh connection's handshake then fails with EPIPE)."""
    saved = sp.checker_config()
    sp.checker_config(interval=0.3)  # probes seldom enough not to take the freed fd number first
    try:
        pool = make_pool(redis_server.url, max_connections=2, timeout=5)
        conn = pool.get_connection()
        fd = conn._sock.fileno()
        pool.release(conn)
        pool.disconnect_free_connections()
        assert pool.stats()["idle"] == 0 and pool.stats()["total"] == 0, pool.stats()
        fresh = socket.create_connection((redis_server.host, redis_server.port), timeout=5)
        try:
            # a reply waiting unread makes the socket readable: what a dead idle one looks like
            fresh.sendall(b"PING\r\n")
            probes = pool.stats()["probes"]
            wait_until(lambda: pool.stats()["probes"] >= probes + 2, what="checker rounds")
            assert fresh.fileno() != fd or pool.stats()["dead_idle_closed"] == 0
            fresh.sendall(b"PING\r\n")
            replies = b""
            while replies.count(b"+PONG") < 2:
                chunk = fresh.recv(64)
                assert chunk, "the fresh socket was shut down"
                replies += chunk
        finally:
            fresh.close()
    finally:
        sp.checker_config(**saved)


def test_per_node_bound_under_64_threads(cluster, start_thread):
    limit, n_threads, per_thread = 4, 64, 60
    clients = [_client(cluster, max_connections=limit), _client(cluster, max_connections=limit)]
    keys = cluster.keys_per_node(8)
    all_keys = [k for ks in keys.values() for k in ks]
    errors, peaks = [], collections.Counter()
    stop = threading.Event()

    def worker(i):
        rc = clients[i % 2]
        try:
            for n in range(per_thread):
                rc.incr(all_keys[(i + n) % len(all_keys)])
        except Exception as exc:
            errors.append(exc)

    def sampler():
        while not stop.is_set():
            for node in cluster.nodes:
                peaks[node.port] = max(peaks[node.port], clients_named(node, NAME))
            for rc in clients:
                for pool in node_pools(rc).values():
                    st = pool.stats()
                    peaks[pool.endpoint] = max(peaks[pool.endpoint],
                                               st["in_use"] + st["idle"] + st["connecting"])
            stop.wait(0.005)  # pacing only

    s = start_thread(sampler)
    threads = [start_thread(worker, i) for i in range(n_threads)]
    for t in threads:
        t.join(120)
    stop.set()
    s.join(10)
    try:
        assert not errors, errors[:3]
        assert not any(t.is_alive() for t in threads)
        total = sum(int(clients[0].get(k) or 0) for k in all_keys)
        assert total == n_threads * per_thread
        for node in cluster.nodes:  # both clients together, per node, counted by the server
            assert 1 <= peaks[node.port] <= limit, peaks
        assert all(v <= limit for k, v in peaks.items() if isinstance(k, str)), peaks
    finally:
        for rc in clients:
            rc.close()


def test_killed_node_pauses_only_its_budget(cluster):
    rc = _client(cluster, max_connections=4)
    try:
        keys = cluster.keys_per_node(4)
        for ks in keys.values():
            for k in ks:
                rc.set(k, "1")
        pools = {int(name.split(":")[1]): p for name, p in node_pools(rc).items()}
        victim, others = cluster.nodes[0], cluster.nodes[1:]
        victim.kill()

        def victim_refused():
            try:
                rc.get(keys[victim.port][0])
            except redis.exceptions.ConnectionError:
                return _state(pools[victim.port]) == "paused"
            raise AssertionError("a dead node answered")

        wait_for(victim_refused, 30, "the dead node's budget to pause")
        for node in others:
            assert _state(pools[node.port]) == "ready"
        for _ in range(20):  # the other nodes keep serving while the victim is paused
            for node in others:
                for k in keys[node.port]:
                    assert rc.incr(k) >= 2
        with pytest.raises(redis.exceptions.ConnectionError):
            rc.get(keys[victim.port][0])
        for node in others:
            assert _state(pools[node.port]) == "ready"
        # the node comes back with its cluster config: its budget recovers
        victim.start()
        wait_for(lambda: rc.set(keys[victim.port][0], "2"), 60, "writes on the restarted node")
        wait_for(lambda: _state(pools[victim.port]) == "ready", 30, "the node to be ready again")
    finally:
        rc.close()
