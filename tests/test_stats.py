"""Counters, redis-py pool attributes and methods stay truthful; checkouts are always ready."""

import select

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import redis_safepool as sp

# exact slot accounting: the health checker's probes would take slots at random moments
pytestmark = pytest.mark.usefixtures("no_checker")

STAT_KEYS = {
    "endpoint", "max_connections", "in_use", "idle", "connecting", "created", "closed",
    "waits", "wait_time_total", "wait_time_max", "timeouts", "waiters", "pools", "state",
    "state_since", "state_reason", "last_error", "generation", "probes", "probe_failures",
    "refused_by_state", "dead_idle_closed", "peer_hangups", "transitions", "closing", "total", "run_id",
    "connect_failures", "max_idle_time", "max_lifetime",
}


def test_stats_keys_and_types(server_url, make_pool):
    pool = make_pool(server_url, max_connections=3)
    st = pool.stats()
    assert set(st) >= STAT_KEYS | {"pool_in_use"}  # later features may add keys
    for key, value in st.items():
        assert value is None or isinstance(value, (int, float, str)), (key, value)
    assert st["endpoint"] == pool.endpoint
    assert st["max_connections"] == 3
    assert st["state"] in {"ready", "paused", "recovering", "overloaded"}
    everything = sp.stats()
    assert isinstance(everything, dict)
    assert set(everything[pool.endpoint]) >= STAT_KEYS
    assert "pool_in_use" not in everything[pool.endpoint]


def test_counters_follow_checkouts(redis_server, make_pool):
    a = make_pool(redis_server.url, max_connections=3, timeout=0)
    b = make_pool(redis_server.url, max_connections=3, timeout=0)
    assert a.stats()["pools"] == 2
    c1, c2 = a.get_connection(), a.get_connection()
    c3 = b.get_connection()
    st = a.stats()
    assert (st["in_use"], st["idle"], st["created"], st["pool_in_use"]) == (3, 0, 3, 2)
    assert b.stats()["pool_in_use"] == 1
    assert sp.stats()[a.endpoint]["in_use"] == 3
    a.release(c1)
    st = a.stats()
    assert (st["in_use"], st["idle"], st["pool_in_use"]) == (2, 1, 1)
    c4 = b.get_connection()  # same flavor: b reuses a's idle connection
    assert c4 is c1
    assert b.stats()["created"] == 3
    for pool, conn in ((a, c2), (b, c3), (b, c4)):
        pool.release(conn)
    st = a.stats()
    assert (st["in_use"], st["idle"], st["waits"], st["timeouts"]) == (0, 3, 0, 0)


def test_idle_stack_is_lifo(server_url, make_pool):
    pool = make_pool(server_url, max_connections=3)
    c1, c2, c3 = (pool.get_connection() for _ in range(3))
    for c in (c1, c2, c3):
        pool.release(c)
    assert pool.get_connection() is c3  # warmest first


def test_redis_py_private_counters(server_url, make_pool):
    pool = make_pool(server_url, max_connections=3)
    assert pool._created_connections == 0
    assert list(pool._available_connections) == []
    assert len(pool._in_use_connections) == 0
    c1, c2 = pool.get_connection(), pool.get_connection()
    assert pool._created_connections == 2
    assert set(pool._in_use_connections) == {c1, c2}
    pool.release(c1)
    assert list(pool._available_connections) == [c1]
    assert set(pool._in_use_connections) == {c2}
    pool.release(c2)
    assert len(pool._in_use_connections) == 0
    assert len(pool._available_connections) == 2
    if hasattr(redis.ConnectionPool, "get_connection_count"):  # redis-py 7+ (metrics)
        counts = pool.get_connection_count()
        assert [n for n, _attrs in counts] == [2, 0]


def test_owns_connection(redis_server_factory, make_pool):
    s1, s2 = redis_server_factory(), redis_server_factory()
    p1, p2 = make_pool(s1.url, max_connections=1), make_pool(s2.url, max_connections=1)
    c1, c2 = p1.get_connection(), p2.get_connection()
    assert p1.owns_connection(c1) and p2.owns_connection(c2)
    assert not p1.owns_connection(c2) and not p2.owns_connection(c1)
    p1.release(c1)
    p2.release(c2)


def test_get_encoder_and_protocol(server_url, make_pool):
    plain = make_pool(server_url, max_connections=2)
    decoded = make_pool(server_url, max_connections=2, decode_responses=True,
                        encoding="latin-1")
    assert plain.get_encoder().decode_responses is False
    enc = decoded.get_encoder()
    assert enc.decode_responses is True and enc.encoding == "latin-1"
    assert plain.get_protocol() in (None, 2)
    assert make_pool(server_url, max_connections=2, protocol=3).get_protocol() == 3


def test_set_retry(server_url, make_pool):
    pool = make_pool(server_url, max_connections=2)
    idle, busy = pool.get_connection(), pool.get_connection()
    pool.release(idle)
    retry = Retry(NoBackoff(), 7)
    pool.set_retry(retry)
    assert idle.retry is retry and busy.retry is retry
    pool.release(busy)
    pool.disconnect()
    assert pool.connection_kwargs["retry"] is retry


def test_disconnect_idle_only_and_all(redis_server, make_pool, wait_until):
    pool = make_pool(redis_server.url, max_connections=2)
    idle, busy = pool.get_connection(), pool.get_connection()
    for c in (idle, busy):
        c.send_command("PING")
        c.read_response()
    pool.release(idle)
    pool.disconnect(inuse_connections=False)
    assert idle._sock is None
    assert busy._sock is not None
    wait_until(lambda: redis_server.connected_clients() == 1, what="the idle one to close")
    pool.disconnect(inuse_connections=True)
    assert busy._sock is None
    wait_until(lambda: redis_server.connected_clients() == 0, what="both to close")
    pool.release(busy)
    st = pool.stats()
    assert st["in_use"] == 0 and st["in_use"] + st["idle"] <= 2
    r = redis.Redis(connection_pool=pool)  # disconnected connections reconnect on checkout
    assert r.ping() is True


def test_reset_keeps_the_pool_usable(server_url, make_pool):
    pool = make_pool(server_url, max_connections=2, timeout=0)
    r = redis.Redis(connection_pool=pool)
    r.set("a", "1")
    pool.reset()
    assert pool.stats()["in_use"] == 0
    assert r.get("a") == b"1"
    held = [pool.get_connection(), pool.get_connection()]  # reset did not leak slots
    for c in held:
        pool.release(c)


def test_killed_idle_connection_is_replaced_on_checkout(redis_server, make_pool, wait_until):
    pool = make_pool(redis_server.url, max_connections=1, timeout=0)
    conn = pool.get_connection()
    conn.send_command("CLIENT", "ID")
    old_id = conn.read_response()
    pool.release(conn)
    assert redis_server.command("CLIENT", "KILL", "ID", str(old_id)).startswith(b":1")
    wait_until(lambda: redis_server.connected_clients() == 0, what="the kill to land")
    conn = pool.get_connection()  # must not hand out the dead socket: no error below
    conn.retry = Retry(NoBackoff(), 0)  # a retry must not be what hides a dead socket
    conn.send_command("CLIENT", "ID")
    assert conn.read_response() != old_id
    pool.release(conn)
    # and through a client with retries off, too
    pool.set_retry(Retry(NoBackoff(), 0))
    c = pool.get_connection()
    c.send_command("CLIENT", "ID")
    cid = c.read_response()
    pool.release(c)
    redis_server.command("CLIENT", "KILL", "ID", str(cid))
    wait_until(lambda: redis_server.connected_clients() == 0, what="the kill to land")
    assert redis.Redis(connection_pool=pool).ping() is True
    assert pool.stats()["in_use"] == 0


def test_connection_with_unread_data_is_never_handed_out(server_url, make_pool):
    pool = make_pool(server_url, max_connections=1)
    conn = pool.get_connection()
    conn.send_command("PING")  # the reply is never read
    readable, _, _ = select.select([conn._sock], [], [], 10)
    assert readable, "the PONG did not arrive"
    pool.release(conn)
    conn = pool.get_connection()
    conn.send_command("ECHO", "fresh")
    assert conn.read_response() == b"fresh"  # not the stale PONG
    pool.release(conn)


def test_unread_data_with_resp3(server_url, make_pool):
    pool = make_pool(server_url, max_connections=1, protocol=3)
    conn = pool.get_connection()
    conn.send_command("PING")
    readable, _, _ = select.select([conn._sock], [], [], 10)
    assert readable
    pool.release(conn)
    conn = pool.get_connection()
    conn.send_command("ECHO", "fresh")
    assert conn.read_response() == b"fresh"
    pool.release(conn)


def test_disconnected_connection_reconnects_within_budget(redis_server, make_pool):
    pool = make_pool(redis_server.url, max_connections=1, timeout=0)
    conn = pool.get_connection()
    conn.disconnect()
    pool.release(conn)
    conn = pool.get_connection()
    assert redis_server.connected_clients() == 1  # connected by the checkout
    conn.send_command("PING")
    assert conn.read_response() == b"PONG"
    pool.release(conn)
    assert pool.stats()["in_use"] == 0
