"""Record lifetimes: reset() under traffic keeps checkouts valid and the budget; unreachable checkouts give their slot back."""

import gc
import logging
import threading
import time

import pytest
import redis

import redis_safepool as sp

# exact slot accounting: the health checker's probes would take slots at random moments
pytestmark = pytest.mark.usefixtures("no_checker")


def counting_connection_class(counts: dict, lock: threading.Lock) -> type:
    """A real redis.Connection that counts the sockets open right now (and the peak)."""

    def change(delta: int) -> None:
        with lock:
            counts["open"] += delta
            counts["peak"] = max(counts["peak"], counts["open"])

    class CountingConnection(redis.Connection):
        def _connect(self):
            change(+1)
            try:
                return super()._connect()
            except BaseException:
                change(-1)
                raise

        def disconnect(self, *args, **kwargs):
            had_socket = self._sock is not None
            try:
                return super().disconnect(*args, **kwargs)
            finally:
                if had_socket:
                    change(-1)

    return CountingConnection


def test_reset_under_traffic_keeps_connections_and_budget(redis_server, make_pool, start_thread):
    counts, lock = {"open": 0, "peak": 0}, threading.Lock()
    pool = make_pool(redis_server.url, max_connections=3, timeout=10,
                     connection_class=counting_connection_class(counts, lock))
    r = redis.Redis(connection_pool=pool)
    errors, done = [], []
    deadline = time.monotonic() + 3.0

    def worker() -> None:
        try:
            for _ in range(3000):
                if time.monotonic() > deadline:
                    break
                r.incr("counter")
        except Exception as exc:  # reported by the main thread
            errors.append(exc)
        done.append(1)

    def resetter() -> None:
        try:
            for _ in range(300):
                if len(done) == 4 or time.monotonic() > deadline:
                    break
                pool.reset()
                time.sleep(0.01)  # pacing, not synchronisation
        except Exception as exc:
            errors.append(exc)

    threads = [start_thread(worker) for _ in range(4)] + [start_thread(resetter)]
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert counts["peak"] <= 3, f"{counts['peak']} sockets open at once with max_connections=3"
    st = pool.stats()
    assert st["in_use"] == 0 and st["connecting"] == 0 and st["waiters"] == 0
    assert st["total"] == st["idle"] == counts["open"] <= 3
    assert st["created"] - st["closed"] == st["total"]
    pool.close()
    assert counts["open"] == 0  # nothing left open after close()


def test_reset_keeps_a_checkout_valid_and_within_budget(server_url, make_pool):
    pool = make_pool(server_url, max_connections=2, timeout=0)
    held = pool.get_connection()
    pool.reset()
    held.send_command("PING")
    assert held.read_response() in (b"PONG", "PONG", True)
    other = pool.get_connection()
    with pytest.raises(sp.PoolTimeoutError):  # the checkout from before still counts
        pool.get_connection()
    assert pool.stats()["in_use"] == 2
    pool.release(held)  # accepted back, no ForeignConnectionError
    pool.release(other)
    st = pool.stats()
    assert st["in_use"] == 0 and st["idle"] == 2 and st["total"] == 2


def test_reset_with_new_settings_closes_old_checkouts_on_release(server_url, make_pool):
    pool = make_pool(server_url, max_connections=2, timeout=0)
    held = pool.get_connection()
    pool.connection_kwargs["client_name"] = "after-reset"  # as django-redis does with a password
    pool.reset()
    fresh = pool.get_connection()
    fresh.send_command("CLIENT", "GETNAME")
    assert fresh.read_response() == b"after-reset"
    pool.release(held)  # an old-settings connection is closed, not pooled for the new ones
    pool.release(fresh)
    st = pool.stats()
    assert st["in_use"] == 0 and st["idle"] == 1 and st["total"] == 1
    assert held._sock is None
    assert pool._available_connections == [fresh]


def test_reset_to_another_server_keeps_the_old_checkout(redis_server_factory, make_pool):
    first, second = redis_server_factory(), redis_server_factory()
    pool = make_pool(first.url, max_connections=1, timeout=0)
    old_label = pool.endpoint
    held = pool.get_connection()
    pool.connection_kwargs["port"] = second.port
    pool.reset()
    assert pool.endpoint != old_label
    assert pool.owns_connection(held)
    assert held in pool._in_use_connections
    assert sp.stats()[old_label]["in_use"] == 1  # still counted where it was made
    fresh = pool.get_connection()  # the new server's own budget
    pool.release(held)
    pool.release(fresh)
    assert pool.stats()["in_use"] == 0 and pool.stats()["idle"] == 1
    gone = sp.stats().get(old_label)
    assert gone is None or (gone["in_use"] == 0 and gone["total"] == 0)


def test_unreachable_checkout_of_a_closed_pool_gives_its_slot_back(server_url, make_pool):
    for _ in range(3):  # with max_connections=2, two pinned slots used to block the server
        pool = sp.SafeConnectionPool.from_url(server_url, max_connections=2, timeout=0)
        label = pool.endpoint
        conn = pool.get_connection()
        pool.close()
        del pool, conn
        gc.collect()
        st = sp.stats().get(label)
        assert st is None or (st["in_use"] == 0 and st["total"] == 0), st
    pool = make_pool(server_url, max_connections=2, timeout=0)
    held = [pool.get_connection(), pool.get_connection()]
    for conn in held:
        pool.release(conn)


def test_unreachable_pool_with_a_checkout_gives_its_slot_back(server_url, make_pool):
    pool = sp.SafeConnectionPool.from_url(server_url, max_connections=1, timeout=0)
    label = pool.endpoint
    conn = pool.get_connection()
    del pool, conn
    gc.collect()
    st = sp.stats().get(label)
    assert st is None or (st["in_use"] == 0 and st["total"] == 0), st
    assert make_pool(server_url, max_connections=1, timeout=0).get_connection()


def test_reset_back_and_forth_between_servers(redis_server_factory, make_pool):
    first, second = redis_server_factory(), redis_server_factory()
    pool = make_pool(first.url, max_connections=2, timeout=0)
    held = [pool.get_connection()]
    for port in (second.port, first.port, second.port):
        pool.connection_kwargs["port"] = port
        pool.reset()
        held.append(pool.get_connection())
        gc.collect()  # the GC walks every endpoint the pool has connections out on, once
    assert len(pool._in_use_list()) == len(held) == 4
    assert all(pool.owns_connection(conn) for conn in held)
    for conn in held:
        pool.release(conn)
    assert pool.stats()["in_use"] == 0
    for server in (first, second):
        label = f"redis://127.0.0.1:{server.port}/0"
        st = sp.stats().get(label)
        assert st is None or (st["in_use"] == 0 and st["total"] == st["idle"]), st


def test_checkout_dropped_unreleased_gives_its_slot_back(server_url, make_pool):
    pool = make_pool(server_url, max_connections=1, timeout=0)
    for _ in range(3):
        conn = pool.get_connection()
        conn.send_command("PING")
        assert conn.read_response() in (b"PONG", "PONG", True)
        del conn
        gc.collect()
        st = pool.stats()
        assert st["in_use"] == 0 and st["total"] == 0, st
    pool.release(pool.get_connection())
    assert pool.stats()["idle"] == 1


def test_checkout_dropped_inside_a_reference_cycle_gives_its_slot_back(server_url, make_pool):
    pool = make_pool(server_url, max_connections=1, timeout=0)
    for _ in range(3):
        conn = pool.get_connection()
        conn.self_cycle = [conn]
        del conn
        gc.collect()
        st = pool.stats()
        assert st["in_use"] == 0 and st["total"] == 0, st
        pool.release(pool.get_connection())  # the reused idle connection, out and back


def test_dropped_checkout_closes_its_socket(redis_server, make_pool, wait_until):
    pool = make_pool(redis_server.url, max_connections=1, timeout=0)
    conn = pool.get_connection()
    conn.send_command("PING")
    conn.read_response()
    assert redis_server.connected_clients() == 1
    del conn
    gc.collect()
    wait_until(lambda: redis_server.connected_clients() == 0, what="the server sees the socket close")


def test_reachable_checkout_is_never_reclaimed(server_url, make_pool):
    pool = make_pool(server_url, max_connections=1, timeout=0)
    held = [pool.get_connection()]
    for _ in range(5):
        gc.collect()
        assert pool.stats()["in_use"] == 1
        with pytest.raises(redis.exceptions.ConnectionError):
            pool.get_connection()
    held[0].send_command("PING")
    held[0].read_response()
    pool.release(held.pop())
    st = pool.stats()
    assert st["in_use"] == 0 and st["idle"] == 1, st
    again = pool.get_connection()  # the idle one, held by the record again in between
    gc.collect()
    assert pool.stats()["in_use"] == 1
    pool.release(again)
    assert pool.stats()["idle"] == 1


def test_dropped_checkout_is_reported_by_the_leak_detector(server_url, make_pool, caplog):
    from redis_safepool import observe

    observe.set_thresholds(leak_threshold=30)
    try:
        pool = make_pool(server_url, max_connections=1, timeout=0)
        conn = pool.get_connection()
        with caplog.at_level(logging.WARNING, logger="redis_safepool.leak"):
            del conn
            gc.collect()
        assert pool.stats()["in_use"] == 0
        assert observe.held() == 0
        msgs = [r.getMessage() for r in caplog.records if r.name == "redis_safepool.leak"]
        assert len(msgs) == 1 and "dropped without release" in msgs[0], msgs
        assert "test_dropped_checkout_is_reported_by_the_leak_detector" in msgs[0]
    finally:
        observe.reset()
