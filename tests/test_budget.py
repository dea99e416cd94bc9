"""The per-endpoint budget is process-wide: many pools and threads never exceed it."""

import threading
import warnings

import pytest
import redis

import redis_safepool as sp


def test_global_bound_many_pools_many_threads(redis_server, make_pool, start_thread):
    limit, n_pools, n_threads, per_thread = 4, 50, 64, 30
    # half the pools have another flavor: they share the budget, not the idle connections
    pools = [make_pool(redis_server.url, max_connections=limit, timeout=60,
                       decode_responses=bool(i % 2)) for i in range(n_pools)]
    clients = [redis.Redis(connection_pool=p) for p in pools]
    errors = []
    samples = []
    stop_sampling = threading.Event()

    def worker(index: int) -> None:
        try:
            for i in range(per_thread):
                client = clients[(index + i) % n_pools]
                client.incr("counter")
                if i % 5 == 0:
                    with client.pipeline(transaction=True) as pipe:
                        pipe.incr("pipelined").get("pipelined").execute()
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    def sampler() -> None:
        while not stop_sampling.is_set():
            st = pools[0].stats()
            samples.append((redis_server.connected_clients(), st["in_use"] + st["idle"]
                            + st["connecting"]))
            stop_sampling.wait(0.001)  # pacing only: bounds the number of sampling sockets

    sampler_thread = start_thread(sampler)
    workers = [start_thread(worker, i) for i in range(n_threads)]
    for t in workers:
        t.join(timeout=120)
    stop_sampling.set()
    sampler_thread.join(timeout=10)

    assert not any(t.is_alive() for t in workers), "workers did not finish"
    assert errors == []
    assert samples, "the sampler never ran"
    assert max(s[0] for s in samples) <= limit, samples
    assert max(s[1] for s in samples) <= limit, samples
    assert max(s[0] for s in samples) >= 1
    r = clients[0]
    assert int(r.get("counter")) == n_threads * per_thread
    assert redis_server.connected_clients() <= limit
    st = pools[0].stats()
    assert st["in_use"] == 0
    assert st["created"] - st["closed"] <= limit
    assert st["pools"] == n_pools
    assert st["max_connections"] == limit


def test_budget_shared_by_pool_objects(server_url, make_pool):
    pools = [make_pool(server_url, max_connections=3, timeout=0) for _ in range(5)]
    held = [pools[i].get_connection() for i in range(3)]
    for pool in pools:
        with pytest.raises(sp.PoolTimeoutError):
            pool.get_connection()
    assert pools[4].stats()["in_use"] == 3
    pools[2].release(held.pop())
    conn = pools[4].get_connection()  # a slot came back: any pool may use it
    pools[4].release(conn)
    for c, p in zip(held, pools):
        p.release(c)
    assert pools[0].stats()["in_use"] == 0


def test_budget_counts_idle_connections(redis_server, make_pool):
    a = make_pool(redis_server.url, max_connections=2, timeout=0)
    b = make_pool(redis_server.url, max_connections=2, timeout=0, decode_responses=True)
    conns = [a.get_connection(), a.get_connection()]
    for c in conns:
        c.send_command("PING")
        assert c.read_response() == b"PONG"
        a.release(c)
    assert a.stats()["idle"] == 2
    assert redis_server.connected_clients() == 2
    # another flavor cannot reuse a's idle connections, but it may not exceed the budget
    # either: an idle connection of the other flavor is closed to make room
    c = b.get_connection()
    c.send_command("PING")
    assert c.read_response() == "PONG"
    assert redis_server.connected_clients() <= 2
    st = b.stats()
    assert st["in_use"] + st["idle"] <= 2
    b.release(c)


def test_endpoints_have_separate_budgets(redis_server_factory, make_pool):
    s1, s2 = redis_server_factory(), redis_server_factory()
    p1 = make_pool(s1.url, max_connections=1, timeout=0)
    p2 = make_pool(s2.url, max_connections=1, timeout=0)
    c1 = p1.get_connection()
    c2 = p2.get_connection()  # other server: its own budget
    with pytest.raises(sp.PoolTimeoutError):
        p1.get_connection()
    assert p1.endpoint != p2.endpoint
    p1.release(c1)
    p2.release(c2)


def test_db_is_part_of_the_endpoint(redis_server, make_pool):
    base = f"redis://127.0.0.1:{redis_server.port}"
    p0 = make_pool(base + "/0", max_connections=1, timeout=0)
    p1 = make_pool(base + "/1", max_connections=1, timeout=0)
    c0, c1 = p0.get_connection(), p1.get_connection()
    assert p0.endpoint != p1.endpoint
    p0.release(c0)
    p1.release(c1)


def test_conflicting_limit_warns_and_keeps_budget(server_url, make_pool):
    first = make_pool(server_url, max_connections=2, timeout=0)
    with pytest.warns(sp.BudgetConflictWarning) as record:
        second = make_pool(server_url, max_connections=10, timeout=0)
    assert issubclass(sp.BudgetConflictWarning, RuntimeWarning)
    text = str(record[0].message)
    assert "2" in text and "10" in text
    assert second.stats()["max_connections"] == 2
    held = [second.get_connection(), second.get_connection()]
    with pytest.raises(sp.PoolTimeoutError):
        second.get_connection()
    with pytest.raises(sp.PoolTimeoutError):
        first.get_connection()
    for c in held:
        second.release(c)


def test_same_limit_does_not_warn(server_url, make_pool):
    make_pool(server_url, max_connections=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_pool(server_url, max_connections=3)


def test_configure_raises_the_budget(server_url, make_pool):
    pool = make_pool(server_url, max_connections=2, timeout=0)
    held = [pool.get_connection(), pool.get_connection()]
    with pytest.raises(sp.PoolTimeoutError):
        pool.get_connection()
    sp.configure(server_url, max_connections=3)
    assert pool.stats()["max_connections"] == 3
    held.append(pool.get_connection())
    with pytest.raises(sp.PoolTimeoutError):
        pool.get_connection()
    # a pool asking for the configured value does not warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_pool(server_url, max_connections=3)
    for c in held:
        pool.release(c)


def test_configure_lowers_as_connections_come_back(redis_server, make_pool, wait_until):
    pool = make_pool(redis_server.url, max_connections=4, timeout=0)
    held = [pool.get_connection() for _ in range(4)]
    for c in held:
        c.send_command("PING")
        c.read_response()
    sp.configure(pool, max_connections=2)
    assert pool.stats()["max_connections"] == 2
    for c in held:
        pool.release(c)
    st = pool.stats()
    assert st["in_use"] + st["idle"] <= 2
    wait_until(lambda: redis_server.connected_clients() <= 2, what="excess connections closed")
    held = [pool.get_connection(), pool.get_connection()]
    with pytest.raises(sp.PoolTimeoutError):
        pool.get_connection()
    for c in held:
        pool.release(c)


def test_configure_by_label(server_url, make_pool):
    pool = make_pool(server_url, max_connections=1, timeout=0)
    sp.configure(pool.endpoint, max_connections=2)
    assert pool.stats()["max_connections"] == 2
    held = [pool.get_connection(), pool.get_connection()]
    for c in held:
        pool.release(c)


def test_configure_rejects_bad_limit(server_url, make_pool):
    make_pool(server_url, max_connections=1)
    with pytest.raises(ValueError):
        sp.configure(server_url, max_connections=0)
    with pytest.raises(TypeError):
        sp.configure(server_url, max_connections="3")
