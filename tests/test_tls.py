"""TLS endpoints against a real TLS redis-server: the checker's plain-RESP probe must not pause them."""

from __future__ import annotations

import pytest
import redis

import redis_safepool as sp


@pytest.fixture
def fast_checker():
    """Quick probes for these tests; the previous settings come back afterwards."""
    saved = sp.checker_config()
    sp.checker_config(interval=0.05, backoff_min=0.02, backoff_max=0.05)
    yield
    sp.checker_config(**saved)


@pytest.fixture
def tls_client(tls_server, make_pool, fast_checker):
    """(server, pool, client) for the TLS server, certificate not verified."""
    server, url = tls_server
    pool = make_pool(url, max_connections=2, timeout=5, ssl_cert_reqs=None)
    return server, pool, redis.Redis(connection_pool=pool)


def test_tls_endpoint_stays_ready_through_probes(tls_client, wait_until):
    server, pool, client = tls_client
    assert client.ping() is True
    probes = pool.stats()["probes"]
    wait_until(lambda: pool.stats()["probes"] >= probes + 5, what="five probes")
    st = pool.stats()
    assert st["state"] == "ready", st
    assert st["probe_failures"] == 0, st
    assert client.set("k", "v") and client.get("k") == b"v"


def test_tls_server_down_pauses_and_comes_back(tls_client, wait_until):
    server, pool, client = tls_client
    assert client.ping() is True
    server.kill()
    wait_until(lambda: pool.stats()["state"] == "paused", what="paused while down")
    with pytest.raises(sp.ServerUnavailableError):
        client.ping()
    server.start()
    wait_until(lambda: pool.stats()["state"] == "ready", what="ready again")
    assert client.ping() is True


def _pings(server) -> int:
    stat = server.info("commandstats").get("cmdstat_ping", "calls=0")
    return int(stat.split(",")[0].split("=")[1])


def test_tls_endpoint_is_pinged_through_its_idle_connections(tls_client, wait_until):
    """The C checker cannot speak TLS: a Python thread PINGs through the pool's own idle connection."""
    server, pool, client = tls_client
    assert client.set("k", "v")  # one connection, idle from now on
    created, before = pool.stats()["created"], _pings(server)
    wait_until(lambda: _pings(server) >= before + 3, what="PINGs through the idle connection")
    # the server counts a PING before the prober has read its reply and given the
    # connection back: wait for that, rather than catch it holding the connection
    wait_until(lambda: pool.stats()["in_use"] == 0, what="the prober to give the connection back")
    st = pool.stats()
    assert st["created"] == created, "the PINGs must use the pool's connection, not new ones"
    assert st["state"] == "ready" and st["in_use"] == 0, st
    assert client.get("k") == b"v"
