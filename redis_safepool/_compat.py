"""The differences between the supported redis-py releases (5.2 to 8.x), in one place."""

from __future__ import annotations

from typing import Any, Optional

import redis

__all__ = ["REDIS_VERSION", "CacheProxyConnection", "maint_notifications_on", "pool_cache",
           "should_reconnect"]


def _version(text: str) -> tuple:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


REDIS_VERSION = _version(getattr(redis, "__version__", "0"))

# Client-side caching connections: redis.cache (8.x), redis.connection (5.1-7.x).
CacheProxyConnection: Optional[type]
try:
    from redis.cache import CacheProxyConnection  # type: ignore[attr-defined,no-redef]
except ImportError:
    try:
        from redis.connection import CacheProxyConnection  # type: ignore[attr-defined,no-redef]
    except ImportError:  # pragma: no cover - no client-side caching in this redis-py
        CacheProxyConnection = None

def maint_notifications_on(pool: Any) -> bool:
    """Whether the pool's connections may get maintenance notifications (redis-py 7+)."""
    enabled = getattr(pool, "maint_notifications_enabled", None)
    return bool(enabled()) if enabled is not None else False


def pool_cache(pool: Any) -> Any:
    """The pool's client-side cache, or None (redis-py before 5.1 has no ``cache``)."""
    return getattr(pool, "cache", None)


def should_reconnect(connection: Any) -> bool:
    """Whether a connection was marked to reconnect before reuse (absent before 7.x)."""
    marked = getattr(connection, "should_reconnect", None)
    return bool(marked()) if marked is not None else False

