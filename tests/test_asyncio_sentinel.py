"""The asyncio SafeSentinel of each client family (redis.asyncio, valkey.asyncio) against real
redis-server --sentinel processes: one master budget, replicas, failover, sentinels down."""

from __future__ import annotations

import asyncio

import pytest
from sentinel_families import family, master_client, over, topo  # noqa: F401 (fixtures)

from topology import SERVICE, clients_named, query

NAME = "safepool-async-sentinel-test"


def _client(fam, sentinel, **kw):
    return master_client(sentinel, NAME, fam.retry(), **kw)


@over("redis-py asyncio", "valkey-py asyncio")
def test_master_budget_shared_with_the_sync_pools_and_replicas(family, topo):
    sentinel = family.module.SafeSentinel(topo.sentinel_addresses)
    sync_sentinel = family.sync.SafeSentinel(topo.sentinel_addresses)
    sync_client = sync_sentinel.master_for(SERVICE, max_connections=4, timeout=5)
    assert sync_client.ping()
    peak = [0]

    async def main():
        client = _client(family, sentinel)
        replica = sentinel.slave_for(SERVICE, max_connections=2, timeout=5)
        pool = client.connection_pool
        assert isinstance(client, family.client)
        assert isinstance(pool, family.module.SafeSentinelConnectionPool)
        stop = asyncio.Event()

        async def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], clients_named(topo.master, NAME))
                await asyncio.sleep(0.005)  # pacing only

        async def worker():
            for _ in range(25):
                await client.incr("counter")

        sampler = asyncio.ensure_future(sample())
        try:
            await asyncio.gather(*(worker() for _ in range(32)))  # 32 tasks, budget 4
        finally:
            stop.set()
            await sampler
        assert int(await client.get("counter")) == 32 * 25
        assert pool.master_address == ("127.0.0.1", topo.master.port)
        assert pool.endpoint == sync_client.connection_pool.endpoint  # one budget
        assert pool.stats()["total"] <= 4
        await client.wait(1, 2000)
        conn = await replica.connection_pool.get_connection()
        try:
            assert int(conn.port) == topo.replica.port
        finally:
            await replica.connection_pool.release(conn)
        assert int(await replica.get("counter")) == 32 * 25
        await client.aclose()
        await replica.aclose()
        await sentinel.aclose()

    try:
        asyncio.run(main())
        assert 1 <= peak[0] <= 4
    finally:
        sync_client.close()
        sync_sentinel.close()


@over("redis-py asyncio", "valkey-py asyncio")
def test_failover_moves_to_the_new_master_and_never_back(family, topo):
    """A connection bound to the old master fails with the library's ConnectionError
    (MasterChangedError); the next commands go to the new master; the old one, restarted
    and still claiming to be master, is never used."""
    sentinel = family.module.SafeSentinel(topo.sentinel_addresses)

    async def main():
        client = _client(family, sentinel)
        pool = client.connection_pool
        assert await client.set("k", "v")
        old, new = topo.master, topo.replica
        conn = await pool.get_connection()
        try:
            assert (conn.host, int(conn.port)) == ("127.0.0.1", old.port)
            await conn.disconnect()
            old.kill()
            await asyncio.to_thread(topo.wait_failover_to, new)
            await asyncio.to_thread(old.start)
            with pytest.raises(family.errors.ConnectionError, match="moved") as err:
                await conn.connect()
            assert isinstance(err.value, family.module.MasterChangedError)
            assert not conn.is_connected, "connected to the old master"
        finally:
            await pool.release(conn)
        ok = 0
        for i in range(20):
            try:
                await client.set(f"n{i}", i)
                ok += 1
            except family.errors.ConnectionError:
                pass  # an idle connection to the old master may fail once
        assert ok >= 19
        assert query(new.port, "GET", "n19") == "19"
        assert pool.master_address == ("127.0.0.1", new.port)
        assert clients_named(old, NAME) == 0
        await client.aclose()
        await sentinel.aclose()

    asyncio.run(main())


@over("redis-py asyncio", "valkey-py asyncio")
def test_sentinels_down_fail_fast_in_the_librarys_errors(family, topo):
    sentinel = family.module.SafeSentinel(topo.sentinel_addresses, backoff_base=5.0,
                                          backoff_cap=10.0)
    for s in topo.sentinels:
        s.kill()

    async def main():
        client = _client(family, sentinel)
        for _ in range(100):
            with pytest.raises(family.errors.ConnectionError) as err:
                await client.get("k")
            assert isinstance(err.value, family.plain_master_not_found)
        with pytest.raises(TypeError, match="SafeSentinelManagedConnection"):
            sentinel.master_for(SERVICE, connection_class=family.plain_managed)
        await client.aclose()
        await sentinel.aclose()

    asyncio.run(main())
    assert sentinel.sentinel_queries <= len(topo.sentinels)  # then backoff: no loop
