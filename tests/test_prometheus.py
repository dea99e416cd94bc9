"""redis_safepool.prometheus: per-endpoint gauges/counters from stats(); optional dependency handled cleanly."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

import redis_safepool as sp

prometheus_client = pytest.importorskip("prometheus_client")

from redis_safepool import prometheus  # noqa: E402

REAL_POOL = hasattr(sp, "SafeConnectionPool")
LABEL = "redis://127.0.0.1:6390/0"
FAKE = {
    LABEL: {
        "endpoint": LABEL, "max_connections": 4, "in_use": 3, "idle": 1, "connecting": 0,
        "created": 9, "closed": 5, "waits": 7, "wait_time_total": 0.25, "wait_time_max": 0.1,
        "timeouts": 2, "waiters": 1, "pools": 2, "state": "paused", "state_since": 1700000000.0,
        "state_reason": "connection refused", "last_error": "ECONNREFUSED", "generation": 3,
        "probes": 11, "probe_failures": 4, "refused_by_state": 6, "dead_idle_closed": 1,
        "peer_hangups": 5, "transitions": 2,
    }
}


def registry_with(stats_fn):
    reg = prometheus_client.CollectorRegistry(auto_describe=True)
    prometheus.register(reg, stats_fn=stats_fn)
    return reg


def test_gauges_and_counters_per_endpoint():
    reg = registry_with(lambda: FAKE)
    val = lambda name, **labels: reg.get_sample_value(name, {"endpoint": LABEL, **labels})  # noqa: E731
    assert val("redis_safepool_max_connections") == 4
    assert val("redis_safepool_connections_in_use") == 3
    assert val("redis_safepool_connections_idle") == 1
    assert val("redis_safepool_waiters") == 1
    assert val("redis_safepool_pools") == 2
    assert val("redis_safepool_connections_created_total") == 9
    assert val("redis_safepool_timeouts_total") == 2
    assert val("redis_safepool_wait_seconds_total") == 0.25
    assert val("redis_safepool_refused_by_state_total") == 6
    assert val("redis_safepool_state_transitions_total") == 2
    assert val("redis_safepool_peer_hangups_total") == 5
    assert val("redis_safepool_state", state="paused") == 1
    assert val("redis_safepool_state", state="ready") == 0


def test_text_exposition_is_valid_and_typed():
    text = prometheus.exposition(lambda: FAKE).decode()
    assert "# TYPE redis_safepool_connections_in_use gauge" in text
    assert "# TYPE redis_safepool_timeouts_total counter" in text or \
        "# TYPE redis_safepool_timeouts counter" in text  # depends on prometheus_client version
    assert f'redis_safepool_timeouts_total{{endpoint="{LABEL}"}} 2.0' in text
    from prometheus_client.parser import text_string_to_metric_families

    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["redis_safepool_state"] == "gauge"
    assert types["redis_safepool_connections_created"] == "counter"


def test_no_endpoints_no_samples():
    reg = registry_with(lambda: {})
    assert reg.get_sample_value("redis_safepool_max_connections", {"endpoint": LABEL}) is None


def test_missing_dependency_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match="pip install prometheus_client"):
        prometheus.collector()


def test_import_redis_safepool_imports_no_optional_dependency():
    code = ("import sys, redis_safepool\n"
            "bad = [m for m in ('prometheus_client', 'flask', 'django', 'django_redis', 'flask_caching')"
            " if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.skipif(not REAL_POOL, reason="needs the C core")
def test_real_endpoint_is_exported(server_url, make_pool):
    pool = make_pool(server_url, max_connections=4)
    redis.Redis(connection_pool=pool).ping()
    reg = registry_with(None)
    label = pool.endpoint
    assert reg.get_sample_value("redis_safepool_max_connections", {"endpoint": label}) == 4
    assert reg.get_sample_value("redis_safepool_connections_created_total", {"endpoint": label}) >= 1
    assert reg.get_sample_value("redis_safepool_state", {"endpoint": label, "state": "ready"}) == 1
