"""Signals reach a thread blocked in get_connection(): Ctrl+C interrupts it, no slot is lost."""

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest


def waiters(pool) -> int:
    return pool.stats()["waiters"]


def interrupt_when_queued(pool, wait_until, start_thread, send) -> threading.Thread:
    """A helper thread that waits until the main thread is queued, then calls ``send()``."""
    def helper() -> None:
        wait_until(lambda: waiters(pool) == 1, what="the main thread to queue")
        send()
    return start_thread(helper)


def assert_no_slot_lost(pool, held) -> None:
    st = pool.stats()
    assert st["waiters"] == 0
    assert st["in_use"] == 1 and pool.stats()["pool_in_use"] == 1
    pool.release(held)
    assert pool.stats()["in_use"] == 0
    # the whole budget (1) is usable again: nothing was left assigned to the interrupted waiter
    conn = pool.get_connection()
    conn.send_command("PING")
    assert conn.read_response() == b"PONG"
    pool.release(conn)
    assert pool.stats()["in_use"] == 0


@pytest.mark.parametrize("timeout", [None, 60])
def test_sigint_to_main_thread(server_url, make_pool, wait_until, start_thread,
                               default_sigint, timeout):
    pool = make_pool(server_url, max_connections=1, timeout=timeout)
    held = pool.get_connection()
    main = threading.main_thread().ident
    t = interrupt_when_queued(pool, wait_until, start_thread,
                              lambda: signal.pthread_kill(main, signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        pool.get_connection()
    t.join(10)
    assert_no_slot_lost(pool, held)


def test_sigint_to_process(server_url, make_pool, wait_until, start_thread, default_sigint):
    pool = make_pool(server_url, max_connections=1, timeout=None)
    held = pool.get_connection()
    t = interrupt_when_queued(pool, wait_until, start_thread,
                              lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        pool.get_connection()
    t.join(10)
    assert_no_slot_lost(pool, held)


def test_repeated_interrupts(server_url, make_pool, wait_until, start_thread, default_sigint):
    pool = make_pool(server_url, max_connections=1, timeout=None)
    held = pool.get_connection()
    main = threading.main_thread().ident
    for _ in range(5):
        t = interrupt_when_queued(pool, wait_until, start_thread,
                                  lambda: signal.pthread_kill(main, signal.SIGINT))
        with pytest.raises(KeyboardInterrupt):
            pool.get_connection()
        t.join(10)
        assert pool.stats()["waiters"] == 0
        assert pool.stats()["in_use"] == 1
    assert_no_slot_lost(pool, held)


def test_handler_exception_propagates(server_url, make_pool, wait_until, start_thread):
    class Boom(Exception):
        pass

    def handler(signum, frame):
        raise Boom()

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        pool = make_pool(server_url, max_connections=1, timeout=60)
        held = pool.get_connection()
        main = threading.main_thread().ident
        t = interrupt_when_queued(pool, wait_until, start_thread,
                                  lambda: signal.pthread_kill(main, signal.SIGUSR1))
        with pytest.raises(Boom):
            pool.get_connection()
        t.join(10)
        assert_no_slot_lost(pool, held)
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_handler_that_returns_does_not_abort_the_wait(server_url, make_pool, wait_until,
                                                      start_thread):
    calls = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(signum))
    try:
        pool = make_pool(server_url, max_connections=1, timeout=60)
        held = pool.get_connection()
        main = threading.main_thread().ident

        def helper() -> None:
            wait_until(lambda: waiters(pool) == 1, what="the main thread to queue")
            signal.pthread_kill(main, signal.SIGUSR1)
            wait_until(lambda: calls, what="the handler to run in the main thread")
            pool.release(held)

        t = start_thread(helper)
        conn = pool.get_connection()  # the handler ran during the wait, then the wait went on
        t.join(10)
        assert calls == [signal.SIGUSR1]
        assert conn is held
        pool.release(conn)
        assert pool.stats()["in_use"] == 0
    finally:
        signal.signal(signal.SIGUSR1, previous)


CTRL_C_SCRIPT = textwrap.dedent("""
    import signal, sys, threading, time
    # A shell that starts jobs in the background without job control starts
    # them with SIGINT ignored, and Python then leaves it ignored: put the
    # KeyboardInterrupt handler back, as an interactive Python has it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import redis_safepool as sp
    pool = sp.SafeConnectionPool.from_url(sys.argv[1], max_connections=1, timeout=None)
    held = pool.get_connection()

    def announce():
        deadline = time.monotonic() + 30
        while pool.stats()["waiters"] != 1 and time.monotonic() < deadline:
            time.sleep(0.002)
        print("waiting", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    try:
        pool.get_connection()
    except KeyboardInterrupt:
        st = pool.stats()
        print("interrupted in_use=%d waiters=%d" % (st["in_use"], st["waiters"]), flush=True)
        pool.release(held)
        conn = pool.get_connection()
        conn.send_command("PING")
        print("after", conn.read_response().decode(), pool.stats()["in_use"], flush=True)
        sys.exit(0)
    sys.exit(3)
""")


def test_ctrl_c_in_a_real_process(server_url, make_pool):
    observer = make_pool(server_url, max_connections=1)  # same endpoint, other process
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_SCRIPT, server_url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the child announces once its main thread is queued in get_connection();
        # then it gets a real process-directed SIGINT (what Ctrl+C sends)
        assert proc.stdout.readline().strip() == "waiting"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "interrupted in_use=1 waiters=0", out
    assert lines[1] == "after PONG 1", out
    assert observer.stats()["in_use"] == 0  # budgets are per process
