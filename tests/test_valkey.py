"""valkey-py clients on the safe pool: same core, same budgets, errors in valkey's hierarchy."""

import asyncio
import gc

import pytest
import redis
import valkey
import valkey.asyncio as avalkey
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import MaxConnectionsError as ValkeyMaxConnectionsError

import redis_safepool as sp
import redis_safepool.valkey as spv
import redis_safepool.valkey.asyncio as spva
from test_fork import run_in_child


@pytest.fixture
def make_valkey_pool():
    """valkey SafeConnectionPools (``make_valkey_pool(url, **kw)``), closed after the test."""
    pools = []

    def factory(url, **kwargs):
        pool = spv.SafeConnectionPool.from_url(url, **kwargs)
        pools.append(pool)
        return pool

    yield factory
    for pool in pools:
        pool.close()
    gc.collect()


def valkey_url(redis_server) -> str:
    return redis_server.url.replace("redis://", "valkey://", 1)


def test_commands_pipeline_pubsub(redis_server, make_valkey_pool, wait_until):
    pool = make_valkey_pool(valkey_url(redis_server), max_connections=4, timeout=5)
    v = valkey.Valkey(connection_pool=pool)
    v.set("greeting", "hello")
    assert v.get("greeting") == b"hello"
    with v.pipeline() as pipe:
        assert pipe.incr("n").incr("n").execute() == [1, 2]
    pubsub = v.pubsub()
    pubsub.subscribe("ch")
    wait_until(lambda: v.publish("ch", "hi") == 1, what="the subscriber")
    message = None
    for _ in range(100):
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message:
            break
    assert message and message["data"] == b"hi"
    pubsub.close()
    assert pool.stats()["in_use"] == 0
    assert pool.endpoint == redis_server.url  # one endpoint key whatever the scheme


def test_transport_of_valkey_connection_classes():
    tls = spv.SafeConnectionPool.from_url("valkeys://127.0.0.1:1/0", max_connections=1)
    unix = spv.SafeConnectionPool(connection_class=valkey.UnixDomainSocketConnection,
                                  path="/nonexistent/valkey.sock", max_connections=1)
    try:
        assert tls.endpoint == "rediss://127.0.0.1:1/0"
        assert unix.endpoint == "unix:///nonexistent/valkey.sock?db=0"
        async_unix = spva.SafeConnectionPool(
            connection_class=avalkey.UnixDomainSocketConnection,
            path="/nonexistent/valkey.sock", max_connections=1)
        assert async_unix.endpoint == unix.endpoint
    finally:
        tls.close()
        unix.close()


@pytest.mark.usefixtures("no_checker")  # exact client counts on the server
def test_budget_shared_with_redis_py_pools(redis_server, make_valkey_pool, make_pool):
    redis_pool = make_pool(redis_server.url, max_connections=3, timeout=0)
    valkey_pool = make_valkey_pool(valkey_url(redis_server), max_connections=3, timeout=0)
    held = [redis_pool.get_connection(), valkey_pool.get_connection(),
            valkey_pool.get_connection()]
    with pytest.raises(ValkeyMaxConnectionsError) as info:
        valkey_pool.get_connection()
    assert isinstance(info.value, ValkeyConnectionError)
    assert isinstance(info.value, spv.PoolTimeoutError)
    with pytest.raises(sp.PoolTimeoutError) as info:
        redis_pool.get_connection()
    assert not isinstance(info.value, ValkeyConnectionError)  # each client its own family
    for conn in held:
        conn.send_command("PING")
        conn.read_response()
    assert redis_server.connected_clients() == 3
    assert valkey_pool.stats()["in_use"] == 3
    redis_pool.release(held[0])
    valkey_pool.release(held[1])
    valkey_pool.release(held[2])
    with pytest.raises(spv.DoubleReleaseError) as info:
        valkey_pool.release(held[2])
    assert isinstance(info.value, valkey.exceptions.ValkeyError)
    assert valkey_pool.stats()["in_use"] == 0


def test_waiter_is_served_in_turn(redis_server, make_valkey_pool, start_thread, wait_until):
    pool = make_valkey_pool(valkey_url(redis_server), max_connections=1, timeout=10)
    held = pool.get_connection()
    got = []
    thread = start_thread(lambda: got.append(pool.get_connection()))
    wait_until(lambda: pool.stats()["waiters"] == 1, what="the waiter to queue")
    pool.release(held)
    thread.join(timeout=10)
    assert got == [held]
    pool.release(got[0])


def test_paused_endpoint_fails_fast_inside_valkeys_hierarchy(redis_server, make_valkey_pool,
                                                             wait_until):
    pool = make_valkey_pool(valkey_url(redis_server), max_connections=2, timeout=5)
    v = valkey.Valkey(connection_pool=pool)
    assert v.ping()
    redis_server.kill()
    wait_until(lambda: pool.stats()["state"] == "paused", what="the pause")
    with pytest.raises(ValkeyConnectionError) as info:
        v.get("k")
    assert isinstance(info.value, spv.ServerUnavailableError)
    assert isinstance(info.value, sp.ServerUnavailableError)  # redis_safepool's handlers too
    redis_server.start()
    wait_until(lambda: pool.stats()["state"] == "ready", what="the recovery")
    assert v.ping()


def test_fork_child_gets_fresh_connections(redis_server, make_valkey_pool):
    pool = make_valkey_pool(valkey_url(redis_server), max_connections=1, timeout=5)
    v = valkey.Valkey(connection_pool=pool)
    v.set("k", "parent")
    held = pool.get_connection()

    def child():
        conn = pool.get_connection()  # the parent's checkout does not count here
        assert conn is not held
        pool.release(conn)
        assert v.get("k") == b"parent"

    assert run_in_child(child) == "ok"
    held.send_command("PING")
    assert held.read_response() == b"PONG"
    pool.release(held)


def test_asyncio_pool(redis_server):
    async def main():
        pool = spva.SafeConnectionPool.from_url(valkey_url(redis_server), max_connections=2,
                                                timeout=0.05)
        v = avalkey.Valkey(connection_pool=pool)
        await v.set("k", "v")
        assert await v.get("k") == b"v"
        held = [await pool.get_connection("GET"), await pool.get_connection("GET")]
        with pytest.raises(ValkeyMaxConnectionsError) as info:
            await pool.get_connection("GET")
        assert isinstance(info.value, spv.PoolTimeoutError)
        waiter = asyncio.ensure_future(v.get("k"))
        await asyncio.sleep(0)
        await pool.release(held.pop())
        assert await asyncio.wait_for(waiter, 5) == b"v"
        await pool.release(held.pop())
        assert pool.stats()["in_use"] == 0
        await pool.aclose()

    asyncio.run(main())


def test_wrong_client_fails_cleanly_and_leaks_nothing(redis_server, make_pool,
                                                      make_valkey_pool):
    redis_pool = make_pool(redis_server.url, max_connections=2, timeout=0)
    valkey_pool = make_valkey_pool(valkey_url(redis_server), max_connections=2, timeout=0)
    with pytest.raises(TypeError, match=r"redis_safepool\.valkey\.SafeConnectionPool"):
        valkey.Valkey(connection_pool=redis_pool)
    with pytest.raises(TypeError, match=r"use redis_safepool\.SafeConnectionPool"):
        redis.Redis(connection_pool=valkey_pool)
    with pytest.raises(TypeError, match=r"redis_safepool\.valkey\.asyncio\.SafeConnectionPool"):
        avalkey.Valkey(connection_pool=valkey_pool)
    for _ in range(5):  # nothing was checked out: the whole budget is still there
        with pytest.raises(TypeError):
            valkey.Valkey(connection_pool=redis_pool)
    assert redis_pool.stats()["in_use"] == 0
    held = [redis_pool.get_connection(), redis_pool.get_connection()]
    for conn in held:
        redis_pool.release(conn)
