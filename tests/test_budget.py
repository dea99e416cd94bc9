"""The per-endpoint budget is process-wide: many pools and threads never exceed it."""

import threading
import time
import warnings

import pytest
import redis

import redis_safepool as sp

# exact slot accounting with timeout=0: a probe of the health checker would hold a slot
# at random moments (a new endpoint is probed at once)
pytestmark = pytest.mark.usefixtures("no_checker")


class SocketCounter:
    """Counts the sockets connection objects have open right now, and the peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = self.peak = 0

    def change(self, delta: int) -> None:
        with self.lock:
            self.open += delta
            self.peak = max(self.peak, self.open)


def counting_connection_class(counter: SocketCounter) -> type:
    """A real redis.Connection that reports every socket it opens (before the connect
    starts) and closes (after the close is done) to ``counter``."""

    class CountingConnection(redis.Connection):
        def _connect(self):
            counter.change(+1)
            try:
                return super()._connect()
            except BaseException:
                counter.change(-1)
                raise

        def disconnect(self, *args, **kwargs):
            had_socket = self._sock is not None
            try:
                return super().disconnect(*args, **kwargs)
            finally:
                if had_socket:
                    counter.change(-1)

    return CountingConnection


def run_storm(server, make_pool, start_thread, sample=None, flavors=(False,), limit=4,
              n_pools=50, n_threads=64, rounds=2000, min_samples=100, **pool_kwargs):
    """64 threads run commands through 50 pool objects (optionally ``sample(pool)`` is recorded).

    With a sampler, workers stop once it has enough samples; else (and at most) after
    ``rounds`` rounds each. Returns the samples and the pools.
    """
    pools = [make_pool(server.url, max_connections=limit, timeout=60,
                       decode_responses=flavors[i % len(flavors)], **pool_kwargs)
             for i in range(n_pools)]
    clients = [redis.Redis(connection_pool=p) for p in pools]
    errors, samples, done = [], [], []
    stop = threading.Event()

    def worker(index: int) -> None:
        count = 0
        try:
            for i in range(rounds):
                if stop.is_set() and i >= 5:
                    break
                client = clients[(index + i) % n_pools]
                client.incr("counter")
                if i % 5 == 0:
                    with client.pipeline(transaction=True) as pipe:
                        pipe.incr("pipelined").get("pipelined").execute()
                count += 1
        except Exception as exc:  # reported by the main thread
            errors.append(exc)
        done.append(count)

    def sampler() -> None:
        for _ in range(100_000):
            if len(samples) >= min_samples or len(done) == n_threads:
                break
            st = pools[0].stats()
            samples.append((sample(pools[0]), st["in_use"] + st["idle"] + st["connecting"]))
        stop.set()

    workers = [start_thread(worker, i) for i in range(n_threads)]
    if sample is not None:
        start_thread(sampler).join(timeout=120)
        stop.set()
    for t in workers:
        t.join(timeout=120)

    assert not any(t.is_alive() for t in workers), "workers did not finish"
    assert errors == []
    if sample is not None:
        assert len(samples) >= 10, "the sampler hardly ran"
    assert int(clients[0].get("counter")) == sum(done)
    st = pools[0].stats()
    assert st["in_use"] == 0
    assert st["pools"] == n_pools
    assert st["max_connections"] == limit
    assert st["created"] - st["closed"] <= limit
    return samples, pools


# 50 pool objects per endpoint are the point here, not a mistake to warn about
storm_warnings = pytest.mark.filterwarnings("ignore:.*connection pools were created")


def closes(pool) -> int:
    """Sockets the process has closed for the pool's endpoint so far (probes included)."""
    st = pool.stats()
    return st["closed"] + st["probes"] + st["probe_failures"]


@storm_warnings
def test_global_bound_counted_on_the_server(redis_server, make_pool, start_thread):
    # The server frees a closed client lazily, so a socket closed just before the count
    # may still be counted next to its successor: the bound allows exactly for closes
    # made since the previous sample (with one flavor, there are hardly any).
    last = []

    def sample(pool):
        before = last[-1] if last else 0
        count = redis_server.connected_clients()
        last.append(closes(pool))
        return count, last[-1] - before

    samples, _ = run_storm(redis_server, make_pool, start_thread, sample)
    over = [(count, slack) for (count, slack), _ in samples if count > 4 + slack]
    assert over == [], samples
    assert max(count for (count, _), _ in samples) >= 1
    assert max(s[1] for s in samples) <= 4, samples
    assert redis_server.connected_clients() <= 4


@storm_warnings
def test_global_bound_with_two_flavors(redis_server, make_pool, start_thread):
    # Pools of two flavors share the budget but not idle connections, so connections are
    # closed and replaced all the time. Counting on the server does not work for that: it
    # frees closed clients lazily (one may be counted next to its successor), and
    # /proc/net/tcp is no snapshot either (a closing socket and its successor can both
    # be listed). So every socket open is counted exactly, from before its connect()
    # to after its close.
    counter = SocketCounter()
    _, pools = run_storm(redis_server, make_pool, start_thread, flavors=(False, True),
                         rounds=100,
                         connection_class=counting_connection_class(counter))
    assert counter.peak <= 4, f"{counter.peak} sockets open at once with max_connections=4"
    assert counter.peak >= 1
    assert pools[0].stats()["closed"] > 0  # the flavors really did swap connections
    st = pools[0].stats()
    assert counter.open == st["idle"] <= 4  # every open socket is an idle connection


@pytest.mark.usefixtures("no_checker")  # exact slot counts
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


@pytest.mark.usefixtures("no_checker")  # exact slot counts
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


@pytest.mark.usefixtures("no_checker")  # exact slot counts
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


@pytest.mark.usefixtures("no_checker")  # exact slot counts
def test_db_is_part_of_the_endpoint(redis_server, make_pool):
    base = f"redis://127.0.0.1:{redis_server.port}"
    p0 = make_pool(base + "/0", max_connections=1, timeout=0)
    p1 = make_pool(base + "/1", max_connections=1, timeout=0)
    c0, c1 = p0.get_connection(), p1.get_connection()
    assert p0.endpoint != p1.endpoint
    p0.release(c0)
    p1.release(c1)


@pytest.mark.usefixtures("no_checker")  # exact slot counts
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


@pytest.mark.usefixtures("no_checker")  # exact slot counts
def test_same_limit_does_not_warn(server_url, make_pool):
    make_pool(server_url, max_connections=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_pool(server_url, max_connections=3)


@pytest.mark.usefixtures("no_checker")  # exact slot counts
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


@pytest.mark.usefixtures("no_checker")  # exact slot counts
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


@pytest.mark.usefixtures("no_checker")  # exact slot counts
def test_configure_by_label(server_url, make_pool):
    pool = make_pool(server_url, max_connections=1, timeout=0)
    sp.configure(pool.endpoint, max_connections=2)
    assert pool.stats()["max_connections"] == 2
    held = [pool.get_connection(), pool.get_connection()]
    for c in held:
        pool.release(c)


@pytest.mark.usefixtures("no_checker")  # exact slot counts
def test_configure_rejects_bad_limit(server_url, make_pool):
    make_pool(server_url, max_connections=1)
    with pytest.raises(ValueError):
        sp.configure(server_url, max_connections=0)
    with pytest.raises(ValueError, match="max_connections"):  # a wrong type too, as the pools
        sp.configure(server_url, max_connections="3")


def test_the_first_look_never_takes_a_lone_callers_only_slot(redis_server_factory, make_pool,
                                                             wait_until):
    # max_connections=1, nothing in use: the checker's first look at the endpoint (it reads
    # the server's view once even with no spare slot) must not take the only slot, or a
    # caller with timeout=0 is refused with nothing in use. A second endpoint, with spare
    # slots, shows the checker has gone over both.
    lone_server, witness_server = redis_server_factory(), redis_server_factory()
    before = sp.checker_config()
    sp.checker_config(enabled=False)
    try:
        lone = make_pool(lone_server.url, max_connections=1, timeout=0)
        witness = make_pool(witness_server.url, max_connections=4)
        sp.checker_config(enabled=True, interval=0.05)
        wait_until(lambda: witness.stats()["probes"] >= 2, what="two probes of the witness")
        st = lone.stats()
        assert st["probes"] == 0 and st["total"] == 0, st
        lone.release(lone.get_connection())
    finally:
        sp.checker_config(enabled=before["enabled"], interval=before["interval"])


def test_checker_probes_never_refuse_an_idle_budget(server_url, make_pool):
    # The health checker probes with a connection of its own inside the budget, but only
    # with a spare slot: a caller with timeout=0, on an endpoint where nothing is in use
    # and nobody waits, must still get its connection, also while a probe runs: this tries
    # exactly then (probing every 50 ms for the test). With max_connections=1 there is no
    # spare slot, so no probe runs while the endpoint is ready.
    before = sp.checker_config()
    sp.checker_config(enabled=True, interval=0.05)
    try:
        lone = make_pool(server_url.replace("/0", "/1"), max_connections=1, timeout=0)
        lone.release(lone.get_connection())
        lone_probes = lone.stats()["probes"]
        pool = make_pool(server_url, max_connections=2, timeout=0)
        refusals, tries = [], 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and tries < 20:
            if not pool.stats()["connecting"]:
                continue
            tries += 1  # a probe is connecting right now
            try:
                conn = pool.get_connection()
            except sp.PoolTimeoutError as exc:
                refusals.append(str(exc))
            else:
                pool.release(conn)
    finally:
        sp.checker_config(enabled=before["enabled"], interval=before["interval"])
    assert tries > 0, "no probe was seen"
    assert refusals == []
    assert lone.stats()["probes"] == lone_probes, "a probe took the only idle connection"
