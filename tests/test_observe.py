"""redis_safepool.observe/report/__main__: pool-per-request warning, leak reports, state log, explain(), CLI."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import warnings

import pytest
import redis

import redis_safepool as sp
from redis_safepool import observe, report

REAL_POOL = hasattr(sp, "SafeConnectionPool")
LABEL = "redis://127.0.0.1:6391/0"


class FakePool:
    """Just what the hooks look at."""

    def __init__(self, label=LABEL, leak_threshold=None):
        self.endpoint = label
        if leak_threshold is not None:
            self.leak_threshold = leak_threshold


def stats_for(state="ready", transitions=0, **extra):
    st = {"endpoint": LABEL, "max_connections": 4, "in_use": 4, "idle": 0, "connecting": 0,
          "created": 4, "closed": 0, "waits": 3, "wait_time_total": 0.3, "wait_time_max": 0.1,
          "timeouts": 0, "waiters": 2, "pools": 1, "state": state, "state_since": time.time(),
          "state_reason": None, "last_error": None, "generation": 1, "probes": 0,
          "probe_failures": 0, "refused_by_state": 0, "dead_idle_closed": 0,
          "transitions": transitions}
    st.update(extra)
    return {LABEL: st}


@pytest.fixture(autouse=True)
def clean_observe():
    observe.reset()
    yield
    observe.reset()


def create_pool_per_request(n, label=LABEL):
    for _ in range(n):
        observe.note_pool_created(FakePool(label))


def test_pool_per_request_warns_once_per_endpoint_naming_the_site():
    observe.set_thresholds(pool_warn_threshold=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_pool_per_request(4)
        assert caught == []
        create_pool_per_request(20)
        create_pool_per_request(20, label="redis://127.0.0.1:6392/0")
    ours = [w for w in caught if issubclass(w.category, observe.PoolPerRequestWarning)]
    assert len(ours) == 2
    msg = str(ours[0].message)
    assert LABEL in msg and "5 connection pools" in msg
    assert "create_pool_per_request" in msg and __file__ in msg
    assert ours[0].filename == __file__
    assert observe.pools_created()[LABEL] == 24


def test_pool_warning_disabled_and_validated():
    observe.set_thresholds(pool_warn_threshold=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_pool_per_request(100)
    with pytest.raises(ValueError):
        observe.set_thresholds(pool_warn_threshold=0)
    with pytest.raises(ValueError):
        observe.set_thresholds(leak_threshold=-1)


def checkout_here(pool, conn):
    observe.note_checkout(pool, conn)


def test_leak_reported_once_with_checkout_stack(caplog):
    observe.set_thresholds(leak_threshold=30)
    pool, conn = FakePool(), object()
    checkout_here(pool, conn)
    assert observe.held() == 1
    assert observe.check_leaks() == []  # not old enough
    with caplog.at_level(logging.WARNING, logger="redis_safepool.leak"):
        new = observe.check_leaks(now=time.monotonic() + 31)
        assert len(new) == 1
        assert new[0]["endpoint"] == LABEL and new[0]["leak_threshold"] == 30
        assert "checkout_here" in new[0]["stack"] and __file__ in new[0]["stack"]
        assert observe.check_leaks(now=time.monotonic() + 60) == []  # reported once
        observe.note_release(pool, conn)
    assert observe.held() == 0
    assert observe.leaks() == new
    lines = [r.getMessage() for r in caplog.records]
    assert any("held for" in line and "checkout_here" in line for line in lines)
    assert any("released after" in line for line in lines)


def test_per_pool_leak_threshold_and_off_by_default():
    pool, conn = FakePool(), object()
    observe.note_checkout(pool, conn)
    assert observe.held() == 0  # tracking off: nothing recorded
    strict = FakePool(leak_threshold=5)
    observe.note_pool_created(strict)
    observe.note_checkout(pool, conn)
    assert observe.held() == 0  # this pool has no threshold
    observe.note_checkout(strict, conn)
    assert observe.held() == 1
    assert len(observe.check_leaks(now=time.monotonic() + 6)) == 1
    observe.note_release(strict, conn)


def test_watcher_thread_reports_without_being_asked(wait_until):
    observe.set_thresholds(leak_threshold=0.05)
    pool, conn = FakePool(), object()
    checkout_here(pool, conn)
    wait_until(observe.leaks, what="the leak watcher's report")
    observe.note_release(pool, conn)


@pytest.mark.skipif(not REAL_POOL, reason="needs the C core")
def test_state_changes_logged_one_line_each_and_explained(redis_server, make_pool, caplog, wait_until):
    pool = make_pool(redis_server.url, max_connections=2, timeout=1)
    r = redis.Redis(connection_pool=pool)
    r.ping()
    label = pool.endpoint
    before = sp.stats()[label]["transitions"]  # the port may have had an earlier life
    with caplog.at_level(logging.INFO, logger="redis_safepool"):
        redis_server.kill()
        wait_until(lambda: sp.stats()[label]["state"] == "paused", what="paused")
        with pytest.raises(sp.ServerUnavailableError):
            r.ping()
        text = observe.explain(pool)
        assert "paused" in text and "ServerUnavailableError" in text and "max_connections=2" in text
        redis_server.start()
        wait_until(lambda: sp.stats()[label]["state"] == "ready", what="ready again")
        wait_until(lambda: any(f"{label}: " in m and "-> ready" in m for m in caplog.messages),
                   what="the log line of the recovery")
    lines = [m for m in caplog.messages if m.startswith(f"{label}: ") and " -> " in m]
    assert len(lines) == sp.stats()[label]["transitions"] - before, lines
    assert "ready -> paused" in lines[0]


def test_explain_limits_state_and_last_failure():
    observe.note_acquire_failed(FakePool(), sp.PoolTimeoutError(
        "Timed out after 0.100s waiting for a connection to " + LABEL))
    text = observe.explain(stats=stats_for("ready", timeouts=1))
    assert LABEL in text and "max_connections=4" in text
    assert "last acquire failure: PoolTimeoutError" in text and "Timed out after 0.100s" in text
    assert "raise max_connections" in text
    paused = report.explain(stats=stats_for("paused", state_reason="LOADING"))
    assert "paused" in paused and "ServerUnavailableError" in paused and "LOADING" in paused
    assert "no redis-safepool endpoints" in report.explain(stats={})


def test_table_has_a_row_per_endpoint():
    table = report.format_table({**stats_for(), "redis://127.0.0.1:6393/0": stats_for()[LABEL]})
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["endpoint", "state", "max"]
    assert len(lines) == 4 and LABEL in table


def test_cli_prints_stats_of_a_running_app(tmp_path):
    source = tmp_path / "stats.json"
    source.write_text(json.dumps(stats_for("paused", state_reason="connection refused")))
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "redis_safepool", *a], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert LABEL in run("stats", "--from", str(source)) and "paused" in run("stats", "--from", str(source))
    assert "connection refused" in run("explain", "--from", str(source))
    assert json.loads(run("stats", "--json", "--from", str(source)))[LABEL]["state"] == "paused"


@pytest.mark.skipif(not REAL_POOL, reason="needs the C core")
def test_cli_demo_and_own_pool(redis_server):
    out = subprocess.run([sys.executable, "-m", "redis_safepool"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "limits:" in out and "max_connections=4" in out
    out = subprocess.run([sys.executable, "-m", "redis_safepool", "explain", "--url", redis_server.url,
                          "--max-connections", "7"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert f"127.0.0.1:{redis_server.port}" in out and "max_connections=7" in out


def _hooks_wired():
    if not REAL_POOL:
        return False
    observe.reset()
    pool = sp.SafeConnectionPool.from_url("redis://127.0.0.1:1/0", max_connections=1)
    wired = observe.pools_created().get(pool.endpoint) == 1
    pool.close()
    observe.reset()
    return wired


@pytest.mark.skipif(not _hooks_wired(), reason="pool.py does not call redis_safepool.observe hooks yet")
def test_real_pools_feed_the_hooks(server_url, make_pool):
    observe.set_thresholds(pool_warn_threshold=8)
    with pytest.warns(observe.PoolPerRequestWarning, match="test_observe.py"):
        for _ in range(10):
            pool = make_pool(server_url, max_connections=4, leak_threshold=30)
            redis.Redis(connection_pool=pool).ping()
    conn = pool.get_connection()
    leaks = observe.check_leaks(now=time.monotonic() + 31)
    assert len(leaks) == 1 and "test_real_pools_feed_the_hooks" in leaks[0]["stack"]
    pool.release(conn)
    assert observe.held() == 0


def test_asyncio_pools_feed_the_pool_per_request_census(redis_server):
    from redis_safepool.asyncio import SafeConnectionPool

    before = observe.pools_created().get(SafeConnectionPool.from_url(redis_server.url).endpoint, 0)
    for _ in range(3):
        SafeConnectionPool.from_url(redis_server.url)
    label = SafeConnectionPool.from_url(redis_server.url).endpoint
    assert observe.pools_created()[label] == before + 5


def test_the_thresholds_keep_their_first_name():
    # settings files and docs call observe.configure(); it is set_thresholds()
    assert observe.configure is observe.set_thresholds
