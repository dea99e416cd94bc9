"""Contract violations (double/foreign release, use after close) raise clear errors, never corrupt counts."""

import pytest
import redis
import redis.exceptions

import redis_safepool as sp

# exact slot accounting: the health checker's probes would take slots at random moments
pytestmark = pytest.mark.usefixtures("no_checker")


def test_exception_hierarchy():
    for cls in (sp.PoolTimeoutError, sp.ServerUnavailableError, sp.PoolClosedError):
        assert issubclass(cls, sp.SafePoolError)
        assert issubclass(cls, redis.exceptions.ConnectionError)
    assert issubclass(sp.PoolTimeoutError, redis.exceptions.MaxConnectionsError)
    for cls in (sp.DoubleReleaseError, sp.ForeignConnectionError):
        assert issubclass(cls, sp.PoolMisuseError)
        assert issubclass(cls, redis.exceptions.RedisError)
        # misuse is a bug in the caller, not something a retry on ConnectionError should hide
        assert not issubclass(cls, redis.exceptions.ConnectionError)


def test_double_release(server_url, make_pool):
    pool = make_pool(server_url, max_connections=2, timeout=0)
    conn = pool.get_connection()
    pool.release(conn)
    with pytest.raises(sp.DoubleReleaseError) as info:
        pool.release(conn)
    assert str(info.value)
    st = pool.stats()
    assert st["in_use"] == 0 and st["idle"] == 1
    assert pool._available_connections == [conn]
    # the connection is on the idle stack once, not twice: two checkouts get two objects
    a, b = pool.get_connection(), pool.get_connection()
    assert a is not b
    with pytest.raises(sp.PoolTimeoutError):
        pool.get_connection()
    pool.release(a)
    pool.release(b)
    assert pool.stats()["in_use"] == 0


def test_foreign_connection_from_other_server(redis_server_factory, make_pool):
    s1, s2 = redis_server_factory(), redis_server_factory()
    p1 = make_pool(s1.url, max_connections=1, timeout=0)
    p2 = make_pool(s2.url, max_connections=1, timeout=0)
    conn = p1.get_connection()
    with pytest.raises(sp.ForeignConnectionError) as info:
        p2.release(conn)
    assert str(info.value)
    assert not p2.owns_connection(conn)
    assert p2.stats()["in_use"] == 0
    assert p1.stats()["in_use"] == 1
    p1.release(conn)  # still the p1's to give back
    assert p1.stats()["in_use"] == 0


def test_foreign_connection_from_same_endpoint_pool(server_url, make_pool):
    a = make_pool(server_url, max_connections=2, timeout=0)
    b = make_pool(server_url, max_connections=2, timeout=0)
    conn = a.get_connection()
    with pytest.raises(sp.ForeignConnectionError):
        b.release(conn)
    assert a.stats()["pool_in_use"] == 1 and b.stats()["pool_in_use"] == 0
    a.release(conn)
    assert a.stats()["in_use"] == 0


def test_foreign_hand_made_connection(redis_server, make_pool):
    pool = make_pool(redis_server.url, max_connections=1, timeout=0)
    conn = redis.Connection(host=redis_server.host, port=redis_server.port)
    with pytest.raises(sp.ForeignConnectionError):
        pool.release(conn)
    st = pool.stats()
    assert st["in_use"] == 0 and st["idle"] == 0
    c = pool.get_connection()  # the bogus release did not add to the idle stack
    assert c is not conn
    pool.release(c)


def test_foreign_connection_from_plain_redis_pool(redis_server, make_pool):
    plain = redis.ConnectionPool(host=redis_server.host, port=redis_server.port)
    pool = make_pool(redis_server.url, max_connections=1, timeout=0)
    conn = plain.make_connection()
    with pytest.raises(sp.ForeignConnectionError):
        pool.release(conn)
    conn.disconnect()
    plain.disconnect()


def test_get_connection_after_close(server_url, make_pool):
    pool = make_pool(server_url, max_connections=1)
    redis.Redis(connection_pool=pool).ping()
    pool.close()
    with pytest.raises(sp.PoolClosedError) as info:
        pool.get_connection()
    assert isinstance(info.value, redis.exceptions.ConnectionError)
    with pytest.raises(sp.PoolClosedError):
        redis.Redis(connection_pool=pool).ping()
    pool.close()  # closing twice is harmless


def test_close_returns_budget_and_closes_idle(redis_server, make_pool, wait_until):
    a = make_pool(redis_server.url, max_connections=2, timeout=0)
    # another flavor: a's idle connections go with a's close (b cannot reuse them)
    b = make_pool(redis_server.url, max_connections=2, timeout=0, decode_responses=True)
    conns = [a.get_connection(), a.get_connection()]
    for c in conns:
        c.send_command("PING")
        assert c.read_response() == b"PONG"
        a.release(c)
    assert redis_server.connected_clients() == 2
    a.close()
    wait_until(lambda: redis_server.connected_clients() == 0,
               what="the closed pool's idle connections to go")
    st = b.stats()
    assert st["in_use"] == 0 and st["idle"] == 0 and st["pools"] == 1
    held = [b.get_connection(), b.get_connection()]  # the whole budget is b's now
    for c in held:
        b.release(c)


def test_release_after_close_is_harmless(redis_server, make_pool, wait_until):
    pool = make_pool(redis_server.url, max_connections=1, timeout=0)
    other = make_pool(redis_server.url, max_connections=1, timeout=0)
    conn = pool.get_connection()
    conn.send_command("PING")
    conn.read_response()
    pool.close()
    pool.release(conn)  # documented no-op for the caller: the connection is closed
    wait_until(lambda: redis_server.connected_clients() == 0, what="the connection to close")
    assert other.stats()["in_use"] == 0
    c = other.get_connection()  # its slot came back to the endpoint
    other.release(c)


def test_pool_garbage_collected_frees_budget(redis_server, make_pool, wait_until):
    import gc

    keeper = make_pool(redis_server.url, max_connections=1, timeout=0, decode_responses=True)
    pool = sp.SafeConnectionPool.from_url(redis_server.url, max_connections=1, timeout=0)
    r = redis.Redis(connection_pool=pool)
    r.ping()
    assert keeper.stats()["pools"] == 2 and keeper.stats()["idle"] == 1
    del r, pool
    gc.collect()
    wait_until(lambda: keeper.stats()["pools"] == 1, what="the collected pool to unregister")
    wait_until(lambda: redis_server.connected_clients() == 0, what="its idle connection to close")
    c = keeper.get_connection()
    keeper.release(c)
