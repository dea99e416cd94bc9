"""A pool handed to a client of the other kind (sync/asyncio) fails at once, naming the right pool."""

import asyncio
import gc
import warnings

import pytest
import redis
import redis.asyncio as aredis

import redis_safepool as sp
import redis_safepool.asyncio as spa


def test_asyncio_pool_in_sync_client(server_url):
    pool = spa.SafeConnectionPool.from_url(server_url, max_connections=1, timeout=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no coroutine left un-awaited either
        with pytest.raises(TypeError) as info:
            redis.Redis(connection_pool=pool)
        with pytest.raises(TypeError):
            redis.Redis(connection_pool=pool).pubsub()
    message = str(info.value)
    assert "redis.client.Redis needs a sync redis pool" in message
    assert "use redis_safepool.SafeConnectionPool" in message
    assert "redis_safepool.asyncio.SafeConnectionPool is the asyncio pool" in message
    assert pool.stats()["in_use"] == 0


def test_sync_pool_in_asyncio_client(server_url):
    pool = sp.SafeConnectionPool.from_url(server_url, max_connections=1, timeout=0)
    try:
        with pytest.raises(TypeError, match=r"use redis_safepool\.asyncio\.SafeConnectionPool"):
            aredis.Redis(connection_pool=pool)
        conn = pool.get_connection()  # the one slot was never taken
        pool.release(conn)
    finally:
        pool.close()


def test_right_clients_still_work(server_url):
    pool = sp.SafeConnectionPool.from_url(server_url, max_connections=2)
    r = redis.Redis(connection_pool=pool)
    assert r.ping() and r.pubsub() is not None and r.pipeline() is not None
    pool.close()

    async def main():
        apool = spa.SafeConnectionPool.from_url(server_url, max_connections=2)
        ar = aredis.Redis(connection_pool=apool)
        assert await ar.ping()
        await apool.aclose()

    asyncio.run(main())
    gc.collect()
