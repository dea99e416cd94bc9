"""Bounded stress: threads mixing checkout/release/disconnect/reset/close/stats on shared pools keep the books and the budget."""

import os
import random
import threading
import time

import pytest
import redis
import redis.exceptions

import redis_safepool as sp

LIMIT = 4
N_POOLS = 6
N_THREADS = 12
OPS_PER_THREAD = 1500
RUN_SECONDS = 5.0


class SocketCounter:
    """Sockets our connection objects have open (connecting included) right now, and the peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = self.peak = self.closes = 0

    def opened(self, conn) -> None:
        with self.lock:
            if not getattr(conn, "_stress_counted", False):
                conn._stress_counted = True
                self.open += 1
                self.peak = max(self.peak, self.open)

    def closed(self, conn) -> None:
        with self.lock:
            if getattr(conn, "_stress_counted", False) and conn._sock is None:
                conn._stress_counted = False
                self.open -= 1
                self.closes += 1


def counting_connection_class(counter: SocketCounter) -> type:
    class CountingConnection(redis.Connection):
        def _connect(self):
            counter.opened(self)  # before the connect starts: the server may count it already
            try:
                return super()._connect()
            except BaseException:
                counter.closed(self)
                raise

        def disconnect(self, *args, **kwargs):
            try:
                return super().disconnect(*args, **kwargs)
            finally:
                counter.closed(self)

    return CountingConnection


def books_consistent(st: dict) -> bool:
    numbers = [v for v in st.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return (all(v >= 0 for v in numbers) and st["in_use"] == 0 and st["connecting"] == 0
            and st["closing"] == 0 and st["waiters"] == 0 and st["total"] == st["idle"]
            and st["created"] - st["closed"] == st["total"] and st["total"] <= LIMIT)


# What a checkout may raise here: a timeout (short, random), a pool another thread just
# closed, or a connect that another thread's disconnect(inuse_connections=True) cut short:
# all redis.exceptions.ConnectionError. Anything else (misuse errors, internal types,
# errors from release/reset/close/stats) is a bug.
EXPECTED_CHECKOUT_ERRORS = redis.exceptions.ConnectionError


def run_worker(rng: random.Random, pools, deadline: float, problems: list) -> None:
    held = []  # (pool, connection) checked out by this thread
    for _ in range(OPS_PER_THREAD):
        if time.monotonic() > deadline:
            break
        pool = rng.choice(pools)
        op = rng.random()
        try:
            if op < 0.55 or not held:
                pool.timeout = rng.choice((0, 0.001, 0.005, 0.02))
                try:
                    conn = pool.get_connection()
                except EXPECTED_CHECKOUT_ERRORS:
                    continue
                held.append((pool, conn))
                try:  # another thread's close()/disconnect() may cut the socket under us
                    conn.send_command("INCR", "stress")
                    conn.read_response()
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                        OSError, AttributeError, ValueError):
                    pass
                if rng.random() < 0.1:
                    conn.disconnect()
            elif op < 0.8:
                owner, conn = held.pop(rng.randrange(len(held)))
                owner.release(conn)
            elif op < 0.86:
                pool.disconnect(inuse_connections=rng.random() < 0.3)
            elif op < 0.92:
                if rng.random() < 0.3:  # new settings: another flavor for this pool
                    pool.connection_kwargs["client_name"] = rng.choice(("stress-a", "stress-b"))
                pool.reset()
            elif op < 0.95:
                pool.close()
                pool.reset()  # reopened, as redis-py's reset() leaves a usable pool
            else:
                pool.stats()
                for st in sp.stats().values():
                    bad = {k: v for k, v in st.items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0}
                    if bad:
                        problems.append(f"negative counters: {bad}")
        except Exception as exc:  # anything else is what this test is looking for
            problems.append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}")
    for owner, conn in held:
        try:
            owner.release(conn)
        except Exception as exc:
            problems.append(f"final release: {type(exc).__name__}: {exc}")


@pytest.mark.filterwarnings("ignore:.*connection pools were created")
def test_mixed_operations_keep_books_and_budget(redis_server, make_pool, start_thread,
                                                wait_until):
    seed = int(os.environ.get("STRESS_SEED", random.randrange(1 << 30)))
    print(f"stress seed: {seed} (rerun with STRESS_SEED={seed})")
    counter = SocketCounter()
    conn_class = counting_connection_class(counter)
    pools = [make_pool(redis_server.url, max_connections=LIMIT, timeout=0.01,
                       connection_class=conn_class, client_name="stress-a",
                       decode_responses=bool(i % 2))
             for i in range(N_POOLS)]
    problems: list = []
    server_counts: list = []
    stop = threading.Event()

    def sampler() -> None:
        # The server's own count of every client but the sampler, with the number of
        # closes so far (ours and the checker's probes) next to it. One socket of its own
        # for every sample (a fresh one per sample could be counted next to its
        # predecessor).
        probe = redis.Redis(host="127.0.0.1", port=redis_server.port, single_connection_client=True)
        own_id = str(probe.client_id())
        for _ in range(20_000):
            if stop.is_set():
                break
            count = sum(1 for c in probe.client_list() if c["id"] != own_id)
            st = pools[0].stats()
            server_counts.append((count, counter.closes + st["probes"] + st["probe_failures"]))
        probe.close()

    deadline = time.monotonic() + RUN_SECONDS
    watcher = start_thread(sampler)
    workers = [start_thread(run_worker, random.Random(seed + i), pools, deadline, problems)
               for i in range(N_THREADS)]
    for t in workers:
        t.join(timeout=120)
    stop.set()
    watcher.join(timeout=30)
    assert not any(t.is_alive() for t in workers), f"workers hung (seed {seed})"
    assert problems == [], f"seed {seed}: {problems[:10]}"
    assert counter.peak <= LIMIT, (
        f"seed {seed}: {counter.peak} sockets open at once with max_connections={LIMIT}")
    # The server frees a closed client lazily, so a socket closed just before a sample may
    # be counted next to its successor, and a probe's close is counted a moment after its
    # slot is free: each sample may exceed the budget by the closes made between the
    # samples either side of it.
    over = [(count, after - before)
            for (_, before), (count, _), (_, after)
            in zip(server_counts, server_counts[1:], server_counts[2:])
            if count > LIMIT + (after - before)]
    assert over == [], f"seed {seed}: the server saw more than {LIMIT}: {over[:10]}"

    def settled():
        # a get/release hands records the checker buried to this thread for disposal
        pools[0].timeout = 1
        pools[0].release(pools[0].get_connection())
        st = pools[0].stats()
        return st if books_consistent(st) else None

    wait_until(settled, timeout=10, what=f"consistent books (seed {seed}): {pools[0].stats()}")
    assert counter.open <= pools[0].stats()["idle"]  # idle ones may be disconnected
    for pool in pools:
        pool.close()
    wait_until(lambda: counter.open == 0, timeout=10, what=f"sockets closed (seed {seed})")
    wait_until(lambda: redis_server.connected_clients() == 0, timeout=10,
               what=f"the server to see our connections go (seed {seed})")
