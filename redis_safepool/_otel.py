"""OpenTelemetry pool metrics through redis-py's observability recorder, under the names and attributes its pools use."""

from __future__ import annotations

import itertools
import threading
from typing import Any, Dict, List, Optional, Tuple

from . import _core

try:  # redis-py >= 7: redis.observability (OpenTelemetry)
    from redis.observability import recorder
    from redis.observability.attributes import AttributeBuilder, ConnectionState, get_pool_name
except ImportError:  # pragma: no cover - an older redis-py records no pool metrics
    recorder = None  # type: ignore[assignment]

AVAILABLE = recorder is not None

# One pool name per endpoint budget, in redis-py's shape ("host:port_<8 hex>"):
# every pool object for an endpoint shares its connections, so they are one pool.
_lock = threading.Lock()
_ids: Dict[str, str] = {}                   # endpoint label -> pool id
_labels: Dict[str, str] = {}                # pool name -> endpoint label
_reported: Dict[str, Tuple[int, int]] = {}  # pool name -> (idle, used) recorded so far
_next_id = itertools.count(1)
_extras_meter: Any = None

# checkout of an idle connection, of a new one, a release, a pool timeout (pool_type.c)
CHECKOUT, CHECKOUT_NEW, RELEASE, TIMEOUT = range(4)


def enabled() -> bool:
    """Whether redis-py's recorder is configured (OpenTelemetry initialised)."""
    if recorder is None:
        return False
    try:
        return bool(recorder.is_enabled())
    except Exception:
        return False


def bind(pool: Any) -> None:
    """Name the pool after its endpoint; record its metrics only when a recorder is configured.

    Decided when the pool is made (or reset): as with redis-py's up-down
    counts, OpenTelemetry is set up before the pools.
    """
    label = pool.endpoint
    if label is None:
        return
    with _lock:
        pool_id = _ids.get(label)
        if pool_id is None:
            pool_id = _ids[label] = f"{next(_next_id):08x}"
    pool._pool_id = pool_id
    on = enabled()
    pool._otel_on = on
    pool._set_hooks(metrics_hook=on_event if on else None)
    if on:
        with _lock:
            _labels[get_pool_name(pool)] = label
        _register_extras()
        settle(pool)


def on_event(pool: Any, kind: int, wait_s: float, create_s: float) -> None:
    """Called by the pools (C for the sync one) only while a recorder is configured."""
    name = get_pool_name(pool)
    if kind == CHECKOUT_NEW:
        recorder.record_connection_create_time(connection_pool=pool, duration_seconds=create_s)
    if kind in (CHECKOUT, CHECKOUT_NEW):
        recorder.record_connection_wait_time(pool_name=name, duration_seconds=wait_s)
    elif kind == TIMEOUT and hasattr(recorder, "record_connection_timeout"):
        recorder.record_connection_timeout(pool_name=name)
    settle(pool, name)


def settle(pool: Any, name: Optional[str] = None) -> None:
    """Bring ``db.client.connection.count`` (idle/used) to the endpoint's books.

    Recorded as the difference from what was recorded before, so connections
    the pool closes on its own (evicted, past their lifetime, dead, drained
    by a pause) leave the count at the next event.
    """
    if not getattr(pool, "_otel_on", False):
        return
    name = name or get_pool_name(pool)
    with _lock:
        st = pool.stats()
        if not st:
            return
        idle, used = st["idle"], st["in_use"]
        idle_before, used_before = _reported.get(name, (0, 0))
        _reported[name] = (idle, used)
    if idle != idle_before:
        recorder.record_connection_count(pool_name=name, connection_state=ConnectionState.IDLE,
                                         counter=idle - idle_before)
    if used != used_before:
        recorder.record_connection_count(pool_name=name, connection_state=ConnectionState.USED,
                                         counter=used - used_before)


# -- the pool's extras: semantic-convention names where there is one ---------------


def _observe(key: str):
    def callback(options: Any) -> List[Any]:
        from opentelemetry.metrics import Observation

        endpoints = _core.stats()
        with _lock:
            names = list(_labels.items())
        out = []
        for name, label in names:
            st = endpoints.get(label)
            if st is not None:
                value = int(st["state"] == "paused") if key == "paused" else st[key]
                out.append(Observation(value, AttributeBuilder.build_connection_attributes(
                    pool_name=name)))
        return out

    return callback


def _register_extras() -> None:
    """Once per meter: the budget, the queue, paused endpoints, checkouts refused by state."""
    global _extras_meter
    meter = getattr(getattr(recorder, "_metrics_collector", None), "meter", None)
    if meter is None or meter is _extras_meter:
        return
    _extras_meter = meter
    try:
        meter.create_observable_up_down_counter(
            "db.client.connection.max", callbacks=[_observe("max_connections")],
            unit="{connection}", description="The maximum number of open connections allowed")
        meter.create_observable_up_down_counter(
            "db.client.connection.pending_requests", callbacks=[_observe("waiters")],
            unit="{request}", description="The number of pending requests for an open connection")
        meter.create_observable_gauge(
            "redis_safepool.endpoint.paused", callbacks=[_observe("paused")], unit="1",
            description="1 while the health checker holds the endpoint paused (fail fast)")
        meter.create_observable_counter(
            "redis_safepool.endpoint.refused_by_state", callbacks=[_observe("refused_by_state")],
            unit="{request}", description="Checkouts refused because the endpoint was paused")
    except Exception:  # a metric must never break the pool
        pass
