"""Every kind of redis-py command works through a SafeConnectionPool (a drop-in pool)."""

import redis
import redis.exceptions

import redis_safepool as sp


def test_strings(server_url, make_pool):
    r = redis.Redis(connection_pool=make_pool(server_url, max_connections=4))
    assert r.set("k", "v") is True
    assert r.get("k") == b"v"
    assert r.incr("n") == 1
    assert r.incrby("n", 41) == 42
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.mget("a", "b", "missing") == [b"1", b"2", None]
    assert r.delete("k", "a") == 2
    assert r.exists("k") == 0


def test_hashes(server_url, make_pool):
    r = redis.Redis(connection_pool=make_pool(server_url, max_connections=4,
                                              decode_responses=True))
    assert r.hset("h", mapping={"f1": "1", "f2": "two"}) == 2
    assert r.hget("h", "f2") == "two"
    assert r.hgetall("h") == {"f1": "1", "f2": "two"}
    assert r.hincrby("h", "f1", 5) == 6
    assert sorted(r.hkeys("h")) == ["f1", "f2"]


def test_lists(server_url, make_pool):
    r = redis.Redis(connection_pool=make_pool(server_url, max_connections=4))
    assert r.rpush("l", "a", "b", "c") == 3
    assert r.lpush("l", "z") == 4
    assert r.lrange("l", 0, -1) == [b"z", b"a", b"b", b"c"]
    assert r.lpop("l") == b"z"
    assert r.blpop(["l"], timeout=1) == (b"l", b"a")
    assert r.blpop(["empty"], timeout=0.05) is None
    assert r.llen("l") == 2


def test_pipeline_with_transaction(server_url, make_pool):
    pool = make_pool(server_url, max_connections=4)
    r = redis.Redis(connection_pool=pool)
    with r.pipeline(transaction=True) as pipe:
        pipe.set("x", 1).incr("x").get("x")
        assert pipe.execute() == [True, 2, b"2"]
    assert pool.stats()["in_use"] == 0


def test_pipeline_without_transaction(server_url, make_pool):
    pool = make_pool(server_url, max_connections=4)
    r = redis.Redis(connection_pool=pool)
    pipe = r.pipeline(transaction=False)
    for i in range(100):
        pipe.rpush("p", i)
    results = pipe.execute()
    assert results == list(range(1, 101))
    assert r.llen("p") == 100
    assert pool.stats()["in_use"] == 0


def test_watch_multi(server_url, make_pool):
    r = redis.Redis(connection_pool=make_pool(server_url, max_connections=4))
    r.set("w", 10)

    def bump(pipe):
        value = int(pipe.get("w"))
        pipe.multi()
        pipe.set("w", value + 1)

    assert r.transaction(bump, "w") == [True]
    assert r.get("w") == b"11"


def test_pubsub(server_url, make_pool, wait_until):
    pool = make_pool(server_url, max_connections=4)
    r = redis.Redis(connection_pool=pool)
    p = r.pubsub()
    p.subscribe("chan")
    first = wait_until(lambda: p.get_message(timeout=0.1), what="subscribe confirmation")
    assert first["type"] == "subscribe"
    assert pool.stats()["in_use"] == 1  # the subscriber holds its connection
    assert r.publish("chan", "hello") == 1
    msg = wait_until(lambda: p.get_message(ignore_subscribe_messages=True, timeout=0.1),
                     what="published message")
    assert msg["type"] == "message"
    assert msg["channel"] == b"chan"
    assert msg["data"] == b"hello"
    p.close()
    assert pool.stats()["in_use"] == 0


def test_lock(server_url, make_pool):
    r = redis.Redis(connection_pool=make_pool(server_url, max_connections=4))
    lock = r.lock("resource", timeout=10)
    assert lock.acquire(blocking=False)
    other = r.lock("resource", timeout=10)
    assert not other.acquire(blocking=False)
    lock.release()
    assert other.acquire(blocking=False)
    other.release()
    with r.lock("resource", timeout=10, blocking_timeout=1):
        assert r.exists("resource") == 1
    assert r.exists("resource") == 0


def test_from_pool(server_url):
    pool = sp.SafeConnectionPool.from_url(server_url, max_connections=4)
    r = redis.Redis.from_pool(pool)
    try:
        assert r.ping() is True
        assert r.set("fp", "1") and r.get("fp") == b"1"
        assert r.connection_pool is pool
    finally:
        r.close()  # Redis.from_pool owns the pool: closes it
    assert pool.stats()["in_use"] == 0


def test_from_url_positional_and_keyword(server_url, make_pool):
    p1 = sp.SafeConnectionPool.from_url(server_url, max_connections=4)
    p2 = sp.SafeConnectionPool.from_url(url=server_url, max_connections=4)
    try:
        for pool in (p1, p2):
            assert isinstance(pool, sp.SafeConnectionPool)
            assert isinstance(pool, redis.ConnectionPool)
            assert redis.Redis(connection_pool=pool).ping() is True
        # both pools are on one endpoint and draw from one budget
        assert p1.stats()["endpoint"] == p2.stats()["endpoint"]
        assert p1.stats()["pools"] == 2
    finally:
        p1.close()
        p2.close()


def test_constructor_with_host_port(redis_server):
    pool = sp.SafeConnectionPool(host=redis_server.host, port=redis_server.port, db=0,
                                 max_connections=3, timeout=5)
    try:
        assert pool.max_connections == 3
        assert pool.timeout == 5
        assert redis.Redis(connection_pool=pool).echo("hi") == b"hi"
    finally:
        pool.close()


def test_defaults(redis_server):
    pool = sp.SafeConnectionPool(host=redis_server.host, port=redis_server.port)
    try:
        assert pool.max_connections == 50
        assert pool.timeout == 20
    finally:
        pool.close()


def test_context_manager_closes(server_url):
    with sp.SafeConnectionPool.from_url(server_url, max_connections=2) as pool:
        assert redis.Redis(connection_pool=pool).ping() is True
    try:
        pool.get_connection()
    except sp.PoolClosedError as exc:
        assert isinstance(exc, redis.exceptions.ConnectionError)
    else:
        raise AssertionError("get_connection() after the with-block did not raise")


def test_unix_socket(redis_server_factory, tmp_path, make_pool):
    sock = str(tmp_path / "redis.sock")
    redis_server_factory(unixsocket=sock, unixsocketperm=700)
    pool = make_pool(f"unix://{sock}?db=0", max_connections=2)
    r = redis.Redis(connection_pool=pool)
    assert r.set("u", "1") and r.get("u") == b"1"
    assert pool.stats()["created"] == 1


def test_resp3(server_url, make_pool):
    pool = make_pool(server_url, max_connections=2, protocol=3)
    r = redis.Redis(connection_pool=pool)
    r.hset("h3", "f", "v")
    assert r.hgetall("h3") == {b"f": b"v"}
    assert pool.get_protocol() == 3
