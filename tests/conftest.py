"""Shared pytest fixtures: throwaway redis-server processes, pools that close themselves, polling."""

from __future__ import annotations

import gc
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, List

import pytest

from polling import polls
from redis_safepool.testing import RedisServer, free_port


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running test; skipped by `make test-asan`")


def pytest_report_header(config: pytest.Config) -> str:
    """Say which build of the C core this run imports (normal or sanitized)."""
    try:
        import redis_safepool._core as core  # noqa: F401

        return f"redis_safepool._core: {core.__file__}"
    except ImportError as exc:  # the core has not been built yet
        return f"redis_safepool._core: not importable ({exc})"


def wait_until(predicate: Callable[[], object], timeout: float = 10.0,
               what: str = "condition") -> object:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout`` s."""
    poll = polls(predicate, what, timeout)
    try:
        while True:
            next(poll)
            time.sleep(0.002)
    except StopIteration as done:
        return done.value


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., object]:
    """The bounded poll helper ``wait_until(predicate, timeout=10, what=...)`` as a fixture."""
    return wait_until


@pytest.fixture
def redis_server_factory():
    """Start redis-servers on demand: ``factory(maxclients=64)``; all are stopped afterwards."""
    servers: List[RedisServer] = []

    def factory(**config: object) -> RedisServer:
        server = RedisServer(**config)
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def redis_server(redis_server_factory) -> RedisServer:
    """A fresh, started redis-server on its own loopback port (own endpoint, own budget)."""
    return redis_server_factory()


@pytest.fixture
def persistent_server(redis_server_factory):
    """A server that keeps every write across a SIGKILL (a job queue survives a restart)."""
    return redis_server_factory(appendonly="yes", appendfsync="always")


@pytest.fixture
def server_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:PORT/0`` of the fresh ``redis_server``."""
    return redis_server.url


@pytest.fixture
def make_pool():
    """Create SafeConnectionPools (``make_pool(url, **kw)``) that are closed after the test."""
    import redis_safepool as sp

    pools = []

    def factory(url: str, **kwargs: object):
        pool = sp.SafeConnectionPool.from_url(url, **kwargs)
        pools.append(pool)
        return pool

    yield factory
    for pool in pools:
        try:
            pool.close()
        except Exception:  # a test may have closed or broken it on purpose
            pass
    pools.clear()
    gc.collect()


@pytest.fixture(autouse=True)
def checker_defaults():
    """Every test may tune the health checker; its settings come back afterwards."""
    import redis_safepool as sp

    saved = sp.checker_config()
    yield
    sp.checker_config(**saved)


@pytest.fixture
def no_checker():
    """Switch the health checker off for one test (its probes take budget slots)."""
    import redis_safepool as sp

    before = sp.checker_config()
    sp.checker_config(enabled=False)
    yield
    sp.checker_config(enabled=before["enabled"])


@pytest.fixture
def default_sigint():
    """Make sure SIGINT raises KeyboardInterrupt in this test, and restore the handler after."""
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def start_thread(target: Callable[..., object], *args: object, name: str = "") -> threading.Thread:
    """Start a daemon thread (so a failing test can never hang the interpreter at exit)."""
    thread = threading.Thread(target=target, args=args, name=name or None, daemon=True)
    thread.start()
    return thread


@pytest.fixture(name="start_thread")
def start_thread_fixture() -> Callable[..., threading.Thread]:
    """``start_thread(target, *args)``: a started daemon thread."""
    return start_thread


# -- TLS ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def cert(tmp_path_factory) -> Path:
    """A self-signed certificate for 127.0.0.1 (key.pem, cert.pem in the returned folder)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem")], check=True, capture_output=True, timeout=60)
    return d


@pytest.fixture
def tls_server(redis_server_factory, cert):
    """(server, url): a started redis-server with a TLS port (client certificates off)."""
    port = free_port()
    server = redis_server_factory(tls_port=port, tls_cert_file=cert / "cert.pem",
                                  tls_key_file=cert / "key.pem",
                                  tls_ca_cert_file=cert / "cert.pem", tls_auth_clients="no")
    return server, f"rediss://127.0.0.1:{port}/0"
