"""AppConfig: applies settings.SAFEPOOL to redis_safepool.observe and checks the cache config.

State changes are logged by the core on the ``redis_safepool`` logger (one line each).
"""

from __future__ import annotations

from typing import Any, List

from django.apps import AppConfig
from django.conf import settings
from django.core import checks

SAFE_POOL_PATH = "redis_safepool.SafeConnectionPool"
DJANGO_REDIS_BACKENDS = ("django.core.cache.backends.redis.RedisCache",)
DJANGO_REDIS_PKG_BACKENDS = ("django_redis.cache.RedisCache",)


def check_caches(app_configs: Any = None, **kwargs: Any) -> List[checks.CheckMessage]:
    """Warn about Redis caches that do not use SafeConnectionPool (redis_safepool.W001)."""
    out: List[checks.CheckMessage] = []
    for alias, conf in getattr(settings, "CACHES", {}).items():
        backend, options = conf.get("BACKEND", ""), conf.get("OPTIONS") or {}
        if backend in DJANGO_REDIS_BACKENDS:
            pool = options.get("pool_class")
            hint = f'OPTIONS={{"pool_class": "{SAFE_POOL_PATH}", "max_connections": 20}}'
        elif backend in DJANGO_REDIS_PKG_BACKENDS:
            pool = options.get("CONNECTION_POOL_CLASS")
            hint = f'OPTIONS={{"CONNECTION_POOL_CLASS": "{SAFE_POOL_PATH}"}}'
        else:
            continue
        name = pool if isinstance(pool, str) else f"{getattr(pool, '__module__', '')}.{getattr(pool, '__name__', '')}"
        if pool is None or not (name.startswith("redis_safepool") or _is_safe(pool)):
            out.append(checks.Warning(
                f"cache {alias!r} uses {backend} without redis_safepool's pool",
                hint=hint, id="redis_safepool.W001"))
    return out


def _is_safe(pool: Any) -> bool:
    try:
        from redis_safepool import SafeConnectionPool
    except ImportError:
        return False
    return isinstance(pool, type) and issubclass(pool, SafeConnectionPool)


class SafePoolConfig(AppConfig):
    """``INSTALLED_APPS += ["redis_safepool.django"]``; optional settings::

        SAFEPOOL = {"pool_warn_threshold": 32, "leak_threshold": 5.0}
        SAFEPOOL_RETRY_AFTER = 1                  # seconds, 503 Retry-After
        SAFEPOOL_503_ON_CONNECTION_ERRORS = True  # also map redis-py ConnectionError
    """

    name = "redis_safepool.django"
    label = "redis_safepool"
    verbose_name = "redis-safepool"

    def ready(self) -> None:
        from .. import observe

        conf = dict(getattr(settings, "SAFEPOOL", {}) or {})
        kwargs = {k: conf[k] for k in ("pool_warn_threshold", "leak_threshold") if k in conf}
        if kwargs:
            observe.set_thresholds(**kwargs)
        checks.register(check_caches, checks.Tags.caches)
