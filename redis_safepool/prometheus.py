"""Prometheus collector exposing ``redis_safepool.stats()`` per endpoint (needs prometheus_client)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Optional

__all__ = ["collector", "register", "exposition", "SafePoolCollector", "STATES"]

PREFIX = "redis_safepool"
STATES = ("ready", "paused", "recovering", "overloaded", "saturated")

# stats() key -> (metric name, help)
GAUGES = {
    "max_connections": ("max_connections", "Connection budget of the endpoint"),
    "in_use": ("connections_in_use", "Connections checked out"),
    "idle": ("connections_idle", "Idle connections kept for reuse"),
    "connecting": ("connections_connecting", "Connections being created"),
    "waiters": ("waiters", "Callers queued for a connection"),
    "pools": ("pools", "Live pool objects using the endpoint"),
    "wait_time_max": ("wait_seconds_max", "Longest wait for a connection"),
    "state_since": ("state_since_seconds", "Epoch time of the last state change"),
    "generation": ("generation", "Server generation (bumped on each observed restart)"),
    "server_connected_clients": ("server_connected_clients", "connected_clients the server reported"),
    "server_maxclients": ("server_maxclients", "maxclients the server reported"),
    "server_headroom": ("server_headroom", "maxclients - connected_clients at the last probe"),
    "server_reserve": ("server_reserve", "Connections kept free on the server for everyone else"),
    "server_rejected_connections": (
        "server_rejected_connections", "rejected_connections the server reported (all clients)"
    ),
    "allowance": ("allowance", "Connections this process may hold now (fleet-aware admission)"),
}
COUNTERS = {
    "created": ("connections_created", "Connections created"),
    "closed": ("connections_closed", "Connections closed"),
    "waits": ("waits", "Acquires that had to wait"),
    "wait_time_total": ("wait_seconds", "Total time spent waiting for a connection"),
    "timeouts": ("timeouts", "Acquires that timed out (PoolTimeoutError)"),
    "probes": ("probes", "Health probes run"),
    "probe_failures": ("probe_failures", "Health probes that failed"),
    "refused_by_state": ("refused_by_state", "Acquires refused fast (ServerUnavailableError)"),
    "dead_idle_closed": ("dead_idle_closed", "Dead idle connections closed on checkout"),
    "peer_hangups": ("peer_hangups", "Sockets the server closed on the pool, seen by the checker"),
    "transitions": ("state_transitions", "Endpoint state changes"),
    "allowance_decreases": ("allowance_decreases", "Times the allowance was halved (rejections seen)"),
}


def _client() -> Any:
    try:
        import prometheus_client  # noqa: F401
        from prometheus_client import core
    except ImportError as exc:  # pragma: no cover - exercised by a test with the module hidden
        raise ImportError(
            "redis_safepool.prometheus needs the optional dependency prometheus_client: "
            "pip install prometheus_client"
        ) from exc
    return core


def _default_stats() -> Dict[str, Dict[str, Any]]:
    from .report import all_stats

    return all_stats()


class SafePoolCollector:
    """A prometheus_client custom collector: one sample per endpoint per metric at scrape time."""

    def __init__(self, stats_fn: Optional[Callable[[], Dict[str, Dict[str, Any]]]] = None) -> None:
        self._core = _client()
        self._stats_fn = stats_fn or _default_stats

    def describe(self) -> list:
        # An empty describe() lets register() succeed without scraping at registration time.
        return []

    def collect(self) -> Iterator[Any]:
        core = self._core
        stats = self._stats_fn()
        for key, (name, doc) in GAUGES.items():
            fam = core.GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["endpoint"])
            for label, st in stats.items():
                v = st.get(key)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    fam.add_metric([label], float(v))
            yield fam
        state = core.GaugeMetricFamily(
            f"{PREFIX}_state", "1 for the endpoint's current health state", labels=["endpoint", "state"]
        )
        for label, st in stats.items():
            current = st.get("state")
            for s in STATES + ((current,) if current and current not in STATES else ()):
                state.add_metric([label, s], 1.0 if s == current else 0.0)
        yield state
        for key, (name, doc) in COUNTERS.items():
            fam = core.CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["endpoint"])
            for label, st in stats.items():
                v = st.get(key)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    fam.add_metric([label], float(v))
            yield fam


def collector(stats_fn: Optional[Callable[[], Dict[str, Dict[str, Any]]]] = None) -> SafePoolCollector:
    """A collector for ``prometheus_client.REGISTRY.register(...)``; raises ImportError if missing."""
    return SafePoolCollector(stats_fn)


def register(registry: Any = None, stats_fn: Optional[Callable[[], Dict]] = None) -> SafePoolCollector:
    """Create a collector and register it (default: prometheus_client's global REGISTRY)."""
    c = collector(stats_fn)
    if registry is None:
        from prometheus_client import REGISTRY as registry
    registry.register(c)
    return c


def exposition(stats_fn: Optional[Callable[[], Dict]] = None) -> bytes:
    """Prometheus text exposition of the current stats, from a private registry."""
    c = collector(stats_fn)
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry(auto_describe=False)
    reg.register(c)
    return generate_latest(reg)
