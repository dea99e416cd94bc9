"""valkey-py's SafeSentinel against real redis-server --sentinel processes, where it is valkey's own:
one master budget with redis-py's pools, valkey's pool timeout (the scenarios every family
shares run over both in tests/test_sentinel.py)."""

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
    SafeSentinel,
    SafeSentinelConnectionPool,
    SafeSentinelManagedConnection,
)

from sentinel_families import master_client, topo  # noqa: F401 (the fixture)

from topology import SERVICE, clients_named, query

NAME = "safepool-valkey-sentinel-test"


def _client(sentinel, **kw):
    return master_client(sentinel, NAME, Retry(ExponentialBackoff(cap=0.05, base=0.01), 2), **kw)


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
