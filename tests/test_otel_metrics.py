"""OpenTelemetry pool metrics (redis-py's recorder, the SDK's in-memory reader): ours as redis-py's pools record them."""

import asyncio

import pytest
import redis
import redis.asyncio as aredis

import redis_safepool as sp
import redis_safepool.asyncio as sp_async
from redis_safepool import _otel

otel_metrics = pytest.importorskip("opentelemetry.metrics", reason="opentelemetry-api missing")
sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics", reason="opentelemetry-sdk missing")
sdk_export = pytest.importorskip("opentelemetry.sdk.metrics.export")
observability = pytest.importorskip("redis.observability",
                                    reason="redis-py without its observability recorder")
from redis.observability import config as otel_config  # noqa: E402
from redis.observability import providers, recorder  # noqa: E402
from redis.observability.attributes import get_pool_name  # noqa: E402

POOL_NAME = "db.client.connection.pool.name"
_reader = None


def _process_reader():
    """One global MeterProvider per process (OpenTelemetry allows one), read in memory."""
    global _reader
    if _reader is None:
        _reader = sdk_export.InMemoryMetricReader()
        otel_metrics.set_meter_provider(sdk_metrics.MeterProvider(metric_readers=[_reader]))
    return _reader


def _reset_recorders():
    recorder.reset_collector()
    try:
        from redis.asyncio.observability import recorder as async_recorder
        async_recorder.reset_collector()
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture
def reader():
    """redis-py observability switched on for one test (and off after it)."""
    metric_reader = _process_reader()
    groups = otel_config.MetricGroup.CONNECTION_BASIC | otel_config.MetricGroup.CONNECTION_ADVANCED
    providers.get_observability_instance().init(otel_config.OTelConfig(metric_groups=groups))
    _reset_recorders()
    yield metric_reader
    providers.reset_observability_instance()
    _reset_recorders()


def _points(reader, pool_name):
    """{(metric, state): value} for one pool name: sums, and counts of histograms."""
    out, attribute_keys = {}, {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    attrs = dict(point.attributes)
                    if attrs.get(POOL_NAME) != pool_name:
                        continue
                    key = (metric.name, attrs.get("db.client.connection.state"))
                    out[key] = getattr(point, "count", None) if hasattr(point, "bucket_counts") \
                        else point.value
                    attribute_keys[key] = sorted(attrs)
    return out, attribute_keys


def _sync_scenario(pool):
    c1, c2 = pool.get_connection(), pool.get_connection()
    pool.release(c1)
    c3 = pool.get_connection()  # the idle one again
    pool.release(c3)
    c4 = pool.get_connection()
    pool.release(c4)
    # two made, three idle checkouts and four in all; one out, one idle now


EXPECTED = {
    ("db.client.connection.count", "idle"): 1,
    ("db.client.connection.count", "used"): 1,
    ("db.client.connection.create_time", None): 2,
}


@pytest.mark.parametrize("pool_class", [redis.ConnectionPool, redis.BlockingConnectionPool,
                                        sp.SafeConnectionPool])
def test_pool_metrics_as_redis_py_records_them(pool_class, reader, redis_server):
    pool = pool_class(host=redis_server.host, port=redis_server.port, max_connections=4)
    try:
        _sync_scenario(pool)
        points, keys = _points(reader, get_pool_name(pool))
        for key, value in EXPECTED.items():
            assert points.get(key) == value, (key, points)
        if pool_class is not redis.ConnectionPool:  # the blocking pool's wait time: ours waits too
            assert points[("db.client.connection.wait_time", None)] == 4
        # the same attribute names as redis-py's own pool records
        assert keys[("db.client.connection.count", "idle")] == [
            "db.client.connection.pool.name", "db.client.connection.state", "db.system",
            "redis.client.library"]
        assert keys[("db.client.connection.create_time", None)] == [
            "db.client.connection.pool.name", "db.system", "redis.client.library"]
    finally:
        pool.close()


def test_pool_extras_and_timeouts(reader, redis_server):
    pool = sp.SafeConnectionPool(host=redis_server.host, port=redis_server.port,
                                 max_connections=1, timeout=0)
    try:
        conn = pool.get_connection()
        with pytest.raises(redis.exceptions.MaxConnectionsError):
            pool.get_connection()
        points, _ = _points(reader, get_pool_name(pool))
        assert points[("db.client.connection.timeouts", None)] == 1
        assert points[("db.client.connection.max", None)] == 1
        assert points[("db.client.connection.pending_requests", None)] == 0
        assert points[("redis_safepool.endpoint.paused", None)] == 0
        pool.release(conn)
    finally:
        pool.close()


def test_pools_of_one_endpoint_are_one_pool_name(reader, redis_server):
    """Their connections are shared: counting them per pool object would go negative."""
    a = sp.SafeConnectionPool(host=redis_server.host, port=redis_server.port, max_connections=4)
    b = sp.SafeConnectionPool(host=redis_server.host, port=redis_server.port, max_connections=4)
    try:
        assert get_pool_name(a) == get_pool_name(b)
        conn = a.get_connection()
        a.release(conn)
        assert b.get_connection() is conn  # a's connection, idle, taken through b
        points, _ = _points(reader, get_pool_name(a))
        assert points[("db.client.connection.count", "idle")] == 0
        assert points[("db.client.connection.count", "used")] == 1
        b.release(conn)
    finally:
        a.close()
        b.close()


def test_no_recorder_no_metrics_calls(redis_server, monkeypatch):
    calls = []
    monkeypatch.setattr(_otel, "on_event", lambda *a: calls.append(a))
    pool = sp.SafeConnectionPool(host=redis_server.host, port=redis_server.port,
                                 max_connections=2)
    try:
        assert not pool._otel_on
        for _ in range(20):
            redis.Redis(connection_pool=pool).ping()
        assert calls == []
    finally:
        pool.close()


@pytest.mark.parametrize("pool_class", [aredis.ConnectionPool, sp_async.SafeConnectionPool])
def test_asyncio_pool_metrics_as_redis_py_records_them(pool_class, reader, redis_server):
    async def main():
        pool = pool_class(host=redis_server.host, port=redis_server.port, max_connections=4)
        try:
            c1, c2 = await pool.get_connection(), await pool.get_connection()
            await pool.release(c1)
            c3 = await pool.get_connection()
            await pool.release(c3)
            return _points(reader, get_pool_name(pool))[0]
        finally:
            await pool.aclose()

    points = asyncio.run(main())
    for key, value in EXPECTED.items():
        assert points.get(key) == value, (key, points)


@pytest.mark.parametrize("pool_class", [aredis.ConnectionPool, sp_async.SafeConnectionPool])
def test_new_asyncio_connections_go_through_ensure_connection(pool_class, redis_server):
    seen = []

    class Instrumented(pool_class):
        async def ensure_connection(self, connection):
            seen.append(connection)
            await super().ensure_connection(connection)

    async def main():
        pool = Instrumented(host=redis_server.host, port=redis_server.port, max_connections=4)
        try:
            c1, c2 = await pool.get_connection(), await pool.get_connection()
            await pool.release(c1)
            await pool.release(c2)
            c3 = await pool.get_connection()
            await pool.release(c3)
            return [c1, c2, c3]
        finally:
            await pool.aclose()

    assert seen == asyncio.run(main())
