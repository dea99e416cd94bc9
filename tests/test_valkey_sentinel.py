"""valkey-py's SafeSentinel against real redis-server --sentinel processes: budget, failover, errors."""

from __future__ import annotations

import threading

import pytest
import redis
import valkey
from valkey.backoff import ExponentialBackoff
from valkey.retry import Retry

import redis_safepool.sentinel as redis_sentinel
from redis_safepool.valkey import exceptions as vexc
from redis_safepool.valkey.sentinel import (
    MasterChangedError,
    MasterNotFoundError,
    SafeSentinel,
    SafeSentinelConnectionPool,
    SafeSentinelManagedConnection,
)

from topology import SERVICE, SentinelTopology, clients_named, query

NAME = "safepool-valkey-sentinel-test"


@pytest.fixture
def topo():
    with SentinelTopology(down_after_ms=500, failover_timeout_ms=2000) as t:
        yield t


def _client(sentinel, **kw):
    kw.setdefault("max_connections", 4)
    kw.setdefault("timeout", 5)
    kw.setdefault("client_name", NAME)
    kw.setdefault("socket_timeout", 2)
    kw.setdefault("socket_connect_timeout", 1)
    kw.setdefault("retry", Retry(ExponentialBackoff(cap=0.05, base=0.01), 2))
    return sentinel.master_for(SERVICE, **kw)


def test_master_for_is_a_valkey_client_on_one_budget_with_redis_py(topo, start_thread):
    vs = SafeSentinel(topo.sentinel_addresses)
    rs = redis_sentinel.SafeSentinel(topo.sentinel_addresses)
    v = _client(vs)
    r = rs.master_for(SERVICE, max_connections=4, timeout=5, client_name=NAME, socket_timeout=2)
    try:
        assert isinstance(v, valkey.Valkey)
        assert isinstance(v.connection_pool, SafeSentinelConnectionPool)
        assert isinstance(v.connection_pool, valkey.sentinel.SentinelConnectionPool)
        assert v.set("k", "v") and r.get("k") == b"v"
        conn = v.connection_pool.get_connection("PING")
        try:
            assert isinstance(conn, SafeSentinelManagedConnection)
            assert isinstance(conn, valkey.connection.Connection)
        finally:
            v.connection_pool.release(conn)
        assert v.connection_pool.endpoint == r.connection_pool.endpoint
        errors, peak = [], [0]
        stop = threading.Event()

        def worker(i):
            try:
                for n in range(50):
                    (v if (i + n) % 2 else r).incr("counter")
            except Exception as exc:
                errors.append(exc)

        def sampler():
            while not stop.is_set():
                peak[0] = max(peak[0], clients_named(topo.master, NAME))
                stop.wait(0.005)  # pacing only

        s = start_thread(sampler)
        threads = [start_thread(worker, i) for i in range(16)]
        for t in threads:
            t.join(60)
        stop.set()
        s.join(10)
        assert not errors
        assert int(v.get("counter")) == 16 * 50
        assert 1 <= peak[0] <= 4  # a valkey and a redis-py pool, one master budget of 4
    finally:
        v.close()
        r.close()
        vs.close()
        rs.close()


def test_pool_timeout_is_valkeys_max_connections_error(topo):
    sentinel = SafeSentinel(topo.sentinel_addresses)
    v = _client(sentinel, max_connections=1, timeout=0.05)
    pool = v.connection_pool
    held = [pool.get_connection("PING")]
    try:
        # the budget in force (an earlier pool on a reused port may have set a larger one)
        while len(held) < pool.stats()["max_connections"]:
            held.append(pool.get_connection("PING"))
        with pytest.raises(valkey.exceptions.MaxConnectionsError) as err:
            pool.get_connection("PING")
        assert isinstance(err.value, vexc.PoolTimeoutError)
    finally:
        for conn in held:
            pool.release(conn)
        v.close()
        sentinel.close()


def test_replica_for_reads_from_the_replica(topo):
    sentinel = SafeSentinel(topo.sentinel_addresses)
    master, replica = _client(sentinel), sentinel.slave_for(SERVICE, max_connections=2)
    try:
        master.set("r", "1")
        master.wait(1, 2000)
        conn = replica.connection_pool.get_connection("GET")
        try:
            assert conn.port == topo.replica.port
        finally:
            replica.connection_pool.release(conn)
        assert replica.get("r") == b"1"
        with pytest.raises(valkey.exceptions.ReadOnlyError):
            replica.set("r", "2")
    finally:
        master.close()
        replica.close()
        sentinel.close()


def test_failover_moves_to_the_new_master_in_valkeys_errors(topo):
    """A connection bound to the old master fails with a valkey ConnectionError and the
    next commands go to the new master; the restarted old master is never used."""
    sentinel = SafeSentinel(topo.sentinel_addresses)
    v = _client(sentinel)
    pool = v.connection_pool
    try:
        assert v.set("k", "v")
        old, new = topo.master, topo.replica
        conn = pool.get_connection("PING")
        try:
            assert (conn.host, int(conn.port)) == ("127.0.0.1", old.port)
            conn.disconnect()
            old.kill()
            topo.wait_failover_to(new)
            old.start()  # claims to be master until the sentinels reconfigure it
            with pytest.raises(valkey.exceptions.ConnectionError, match="moved") as err:
                conn.connect()
            assert isinstance(err.value, MasterChangedError)
            assert conn._sock is None, "connected to the old master"
        finally:
            pool.release(conn)
        ok = 0
        for i in range(20):
            try:
                v.set(f"n{i}", i)
                ok += 1
            except valkey.exceptions.ConnectionError:
                pass  # an idle connection to the old master may fail once
        assert ok >= 19
        assert query(new.port, "GET", "n19") == "19"
        assert pool.master_address == ("127.0.0.1", new.port)
        assert clients_named(old, NAME) == 0
    finally:
        v.close()
        sentinel.close()


def test_sentinels_down_fail_fast_with_valkeys_master_not_found(topo):
    sentinel = SafeSentinel(topo.sentinel_addresses, backoff_base=5.0, backoff_cap=10.0)
    v = _client(sentinel)
    try:
        for s in topo.sentinels:
            s.kill()
        for _ in range(100):
            with pytest.raises(valkey.exceptions.ConnectionError) as err:
                v.get("k")
            assert isinstance(err.value, MasterNotFoundError)
        assert MasterNotFoundError is valkey.sentinel.MasterNotFoundError
        assert not isinstance(err.value, redis.exceptions.RedisError)
        assert sentinel.sentinel_queries <= len(topo.sentinels)  # then backoff: no loop
    finally:
        v.close()
        sentinel.close()


def test_plain_valkey_managed_connection_is_refused(topo):
    sentinel = SafeSentinel(topo.sentinel_addresses)
    try:
        with pytest.raises(TypeError, match="SafeSentinelManagedConnection"):
            sentinel.master_for(SERVICE,
                                connection_class=valkey.sentinel.SentinelManagedConnection)
    finally:
        sentinel.close()
