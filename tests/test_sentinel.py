"""SafeSentinel against real redis-server --sentinel processes: budget, failover, backoff (the
scenarios every client family shares run over redis-py and valkey-py)."""

from __future__ import annotations

import collections
import threading

import pytest
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from redis_safepool._rediscovery import Backoff
from redis_safepool.sentinel import (
    SafeSentinel,
    SafeSentinelConnectionPool,
    SafeSentinelManagedConnection,
)

from sentinel_families import family, master_client, over, topo  # noqa: F401 (fixtures)

from topology import SERVICE, clients_named, query, wait_for

NAME = "safepool-sentinel-test"


class CountingConnection(SafeSentinelManagedConnection):
    """Counts socket connect attempts and commands per server port (test instrumentation)."""

    lock = threading.Lock()
    attempts: collections.Counter = collections.Counter()
    commands: collections.Counter = collections.Counter()

    def _connect(self):
        with self.lock:
            self.attempts[int(self.port)] += 1
        return super()._connect()

    def send_packed_command(self, command, check_health=True):
        with self.lock:
            self.commands[int(self.port)] += 1
        return super().send_packed_command(command, check_health)


@pytest.fixture
def counting():
    CountingConnection.attempts = collections.Counter()
    CountingConnection.commands = collections.Counter()
    return CountingConnection


def _client(sentinel, **kw):
    return master_client(sentinel, NAME, Retry(ExponentialBackoff(cap=0.05, base=0.01), 2), **kw)


def test_master_for_is_safe_and_budget_is_per_master(topo, start_thread):
    sentinel = SafeSentinel(topo.sentinel_addresses)
    a, b = _client(sentinel), _client(sentinel, decode_responses=True)
    try:
        assert isinstance(a.connection_pool, SafeSentinelConnectionPool)
        assert a.set("k", "v") and b.get("k") == "v"
        assert a.connection_pool.master_address == ("127.0.0.1", topo.master.port)
        assert str(topo.master.port) in a.connection_pool.endpoint
        errors, peak = [], [0]
        stop = threading.Event()

        def worker(i):
            try:
                for n in range(50):
                    (a if (i + n) % 2 else b).incr("counter")
            except Exception as exc:
                errors.append(exc)

        def sampler():
            while not stop.is_set():
                peak[0] = max(peak[0], clients_named(topo.master, NAME))
                stop.wait(0.005)  # pacing only

        s = start_thread(sampler)
        threads = [start_thread(worker, i) for i in range(16)]
        for t in threads:
            t.join(60)
        stop.set()
        s.join(10)
        assert not errors
        assert int(a.get("counter")) == 16 * 50
        assert 1 <= peak[0] <= 4  # two pools, one master budget of 4
        st = a.connection_pool.stats()
        assert st["in_use"] + st["idle"] + st["connecting"] <= 4
    finally:
        a.close()
        b.close()
        sentinel.close()


@over("redis-py", "valkey-py")
def test_replica_for_reads_from_the_replica(family, topo):
    sentinel = family.module.SafeSentinel(topo.sentinel_addresses)
    master = master_client(sentinel, NAME, family.retry())
    replica = sentinel.slave_for(SERVICE, max_connections=2)
    try:
        assert isinstance(replica, family.client)
        master.set("r", "1")
        master.wait(1, 2000)
        pool = replica.connection_pool
        conn = pool.get_connection("GET")
        try:
            assert conn.port == topo.replica.port
        finally:
            pool.release(conn)
        assert replica.get("r") == b"1"
        with pytest.raises(family.errors.ReadOnlyError):
            replica.set("r", "2")
    finally:
        master.close()
        replica.close()
        sentinel.close()


def test_failover_bound_resume_no_stale_connection(topo, counting, start_thread):
    sentinel = SafeSentinel(topo.sentinel_addresses)
    r = _client(sentinel, connection_class=counting)
    pool = r.connection_pool
    old, new = topo.master, topo.replica
    ok = collections.Counter()
    unexpected, peaks = [], collections.Counter()
    stop, sampler_stop = threading.Event(), threading.Event()
    n_threads = 8

    def worker(i):
        while not stop.is_set():
            try:
                r.incr("counter")
                ok["writes"] += 1
            except redis.exceptions.ConnectionError:
                ok["errors"] += 1
                stop.wait(0.01)  # pacing only: a failing client does not spin
            except Exception as exc:  # anything else is a bug
                unexpected.append(exc)
                return

    def sampler():
        while not sampler_stop.is_set():
            for server in (old, new):
                if server.running:
                    try:
                        peaks[server.port] = max(peaks[server.port], clients_named(server, NAME))
                    except (OSError, redis.exceptions.RedisError):
                        pass  # the server died between running and the query
            st = pool.stats()
            if st.get("endpoint"):
                peaks["pool"] = max(peaks["pool"], st["in_use"] + st["idle"] + st["connecting"])
            sampler_stop.wait(0.005)  # pacing only

    s = start_thread(sampler)
    threads = [start_thread(worker, i) for i in range(n_threads)]
    try:
        wait_for(lambda: ok["writes"] >= 200, 30, "writes on the first master")
        old.kill()
        attempts_before = counting.attempts[old.port]
        topo.wait_failover_to(new)
        # the old master comes back at once and believes it is still master for a
        # while (until the sentinels reconfigure it): nothing may write to it
        old.start()
        commands_at_restart = counting.commands[old.port]
        base = ok["writes"]
        wait_for(lambda: ok["writes"] >= base + 200, 30, "writes on the new master")
        assert pool.master_address == ("127.0.0.1", new.port)
        assert str(new.port) in pool.endpoint
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        sampler_stop.set()
        s.join(10)
    try:
        assert not unexpected, unexpected
        # bound held on each server and in the pool, throughout
        assert peaks[old.port] <= 4 and peaks[new.port] <= 4 and peaks["pool"] <= 4, peaks
        # writes resumed on the new master and nothing was written to the old one
        r.set("after-failover", "yes")
        assert query(new.port, "GET", "after-failover") == "yes"
        # no stale connection: not one command to the restarted old master, which
        # believes it is master until the sentinels reconfigure it
        assert counting.commands[old.port] == commands_at_restart
        assert clients_named(old, NAME) == 0
        attempts_after_kill = counting.attempts[old.port] - attempts_before
        # bounded: the first failures of each thread plus one half-open trial per
        # backoff window, until the sentinels mark the master down
        assert attempts_after_kill <= 3 * n_threads + 16, (attempts_after_kill, ok)
        assert ok["errors"] > attempts_after_kill  # most failures never touched the network
        assert sentinel.sentinel_queries < ok["errors"]  # nor asked a sentinel each
    finally:
        r.close()
        sentinel.close()


def test_no_stale_connection_after_restart(topo, counting):
    """After a failover the restarted old master (still claiming master) is never used."""
    sentinel = SafeSentinel(topo.sentinel_addresses)
    r = _client(sentinel, connection_class=counting)
    try:
        for i in range(10):
            r.set(f"k{i}", i)
        old, new = topo.master, topo.replica
        old.kill()
        topo.wait_failover_to(new)
        old.start()  # it claims to be master until the sentinels reconfigure it
        counted = counting.commands[old.port]
        for i in range(50):
            try:
                r.set(f"n{i}", i)
            except redis.exceptions.ConnectionError:
                pass  # the first command on an idle stale connection may fail
        assert counting.commands[old.port] == counted
        assert query(new.port, "GET", "n49") == "49"
        assert clients_named(old, NAME) == 0
    finally:
        r.close()
        sentinel.close()


@over("redis-py", "valkey-py")
def test_failover_moves_to_the_new_master_in_the_librarys_errors(family, topo):
    """A connection bound to the old master fails with the library's ConnectionError and the
    next commands go to the new master; the restarted old master is never used."""
    sentinel = family.module.SafeSentinel(topo.sentinel_addresses)
    v = master_client(sentinel, NAME, family.retry())
    pool = v.connection_pool
    try:
        assert v.set("k", "v")
        old, new = topo.master, topo.replica
        conn = pool.get_connection("PING")
        try:
            assert (conn.host, int(conn.port)) == ("127.0.0.1", old.port)
            conn.disconnect()
            old.kill()
            topo.wait_failover_to(new)
            old.start()  # claims to be master until the sentinels reconfigure it
            with pytest.raises(family.errors.ConnectionError, match="moved") as err:
                conn.connect()
            assert isinstance(err.value, family.module.MasterChangedError)
            assert conn._sock is None, "connected to the old master"
        finally:
            pool.release(conn)
        ok = 0
        for i in range(20):
            try:
                v.set(f"n{i}", i)
                ok += 1
            except family.errors.ConnectionError:
                pass  # an idle connection to the old master may fail once
        assert ok >= 19
        assert query(new.port, "GET", "n19") == "19"
        assert pool.master_address == ("127.0.0.1", new.port)
        assert clients_named(old, NAME) == 0
    finally:
        v.close()
        sentinel.close()


@over("redis-py", "valkey-py")
def test_sentinels_down_fail_fast_with_bounded_queries(family, topo):
    sentinel = family.module.SafeSentinel(topo.sentinel_addresses, backoff_base=5.0,
                                          backoff_cap=10.0)
    r = master_client(sentinel, NAME, family.retry())
    try:
        for s in topo.sentinels:
            s.kill()
        for _ in range(200):
            with pytest.raises(family.errors.ConnectionError) as err:  # the library's own
                r.get("k")
            assert isinstance(err.value, family.plain_master_not_found)
        # one query per sentinel, then jittered backoff: no reconnect loop
        assert sentinel.sentinel_queries <= len(topo.sentinels)
        assert family.module.MasterNotFoundError is family.plain_master_not_found
    finally:
        r.close()
        sentinel.close()


@over("redis-py", "valkey-py")
def test_plain_managed_connection_is_refused(family, topo):
    sentinel = family.module.SafeSentinel(topo.sentinel_addresses)
    try:
        with pytest.raises(TypeError, match="SafeSentinelManagedConnection"):
            sentinel.master_for(SERVICE, connection_class=family.plain_managed)
    finally:
        sentinel.close()


def test_backoff_is_jittered_exponential_and_capped():
    b = Backoff(base=0.1, cap=1.0)
    delays = [b.failed("k") for _ in range(8)]
    for n, d in enumerate(delays):
        nominal = min(1.0, 0.1 * 2 ** n)
        assert nominal * 0.5 <= d <= nominal
    assert not b.ready("k") and not b.claim("k")
    b.succeeded("k")
    assert b.ready("k") and b.claim("k") and b.failures("k") == 0


def test_a_command_reconnecting_after_a_failover_checks_the_master(topo):
    """redis-py reconnects a dropped socket inside a command (not through connect()):
    that path must ask Sentinel too, or it reaches the old master."""
    sentinel = SafeSentinel(topo.sentinel_addresses)
    r = _client(sentinel)
    pool = r.connection_pool
    assert r.set("k", "v")
    old, new = topo.master, topo.replica
    conn = pool.get_connection()
    try:
        assert (conn.host, int(conn.port)) == ("127.0.0.1", old.port)
        conn.disconnect()
        # a real failover; the old master stays up and becomes a replica
        assert query(topo.sentinels[0].port, "SENTINEL", "FAILOVER", SERVICE) == "OK"
        topo.wait_failover_to(new)
        with pytest.raises(redis.exceptions.ConnectionError, match="moved"):
            conn.send_command("PING")  # reconnects through connect_check_health()
        assert conn._sock is None, "connected to the old master"
    finally:
        pool.release(conn)
    assert r.get("k") == b"v" and pool.master_address == ("127.0.0.1", new.port)
