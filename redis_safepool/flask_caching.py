"""Flask-Caching's RedisCache on a SafeConnectionPool, also when the app gives only CACHE_REDIS_URL."""

from __future__ import annotations

from typing import Any, Dict, List

import redis
from flask_caching.backends.rediscache import RedisCache as _FlaskRedisCache

from .pool import SafeConnectionPool

__all__ = ["RedisCache"]

# CACHE_OPTIONS keys that are the cache's own; the others are the pool's and client's
_CACHE_KEYS = ("default_timeout", "key_prefix", "ignore_delete_many_errors")


class RedisCache(_FlaskRedisCache):
    """``CACHE_TYPE = "redis_safepool.flask_caching.RedisCache"``.

    Flask-Caching's own ``RedisCache`` builds a plain redis-py pool from
    ``CACHE_REDIS_URL`` (or ``CACHE_REDIS_HOST``/``PORT``/``DB``/``PASSWORD``);
    this one builds a ``SafeConnectionPool`` from the same settings, with the
    other ``CACHE_OPTIONS`` (``max_connections``, ``timeout``, socket
    settings, ...) as the pool's. ``CACHE_OPTIONS={"connection_pool": pool}``
    (``SafePool.cache_options()``) uses that pool instead."""

    @classmethod
    def factory(cls, app: Any, config: Dict[str, Any], args: List[Any],
                kwargs: Dict[str, Any]) -> "RedisCache":
        cache_kwargs = {k: kwargs.pop(k) for k in _CACHE_KEYS if k in kwargs}
        if config.get("CACHE_KEY_PREFIX"):
            cache_kwargs["key_prefix"] = config["CACHE_KEY_PREFIX"]
        pool = kwargs.pop("connection_pool", None)
        if pool is not None and kwargs:
            raise TypeError(f"CACHE_OPTIONS {sorted(kwargs)} do not apply to the given "
                            "connection_pool; set them on the pool")
        if pool is None and config.get("CACHE_REDIS_URL"):
            pool = SafeConnectionPool.from_url(str(config["CACHE_REDIS_URL"]), **kwargs)
        elif pool is None:
            if config.get("CACHE_REDIS_PASSWORD"):
                kwargs["password"] = config["CACHE_REDIS_PASSWORD"]
            pool = SafeConnectionPool(host=config.get("CACHE_REDIS_HOST", "localhost"),
                                      port=config.get("CACHE_REDIS_PORT", 6379),
                                      db=config.get("CACHE_REDIS_DB", 0), **kwargs)
        client = redis.Redis(connection_pool=pool)
        return cls(*args, **{"host": client, **cache_kwargs})
