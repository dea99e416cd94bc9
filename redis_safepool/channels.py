"""channels-redis layers whose per-loop, per-host pools are asyncio SafeConnectionPools."""

from __future__ import annotations

from typing import Any, Dict

from channels_redis.core import RedisChannelLayer as _RedisChannelLayer  # type: ignore[import-untyped]
from channels_redis.pubsub import (  # type: ignore[import-untyped]
    RedisPubSubChannelLayer as _RedisPubSubChannelLayer,
    RedisSingleShardConnection as _Shard,
)
from redis import asyncio as aioredis

from .asyncio import SafeConnectionPool

__all__ = ["RedisChannelLayer", "RedisPubSubChannelLayer", "create_pool"]


def create_pool(host: Dict[str, Any]) -> Any:
    """``channels_redis.utils.create_pool`` on the safe pool.

    ``host`` is one entry of the layer's decoded ``hosts``: ``{"address": url, **pool_kwargs}``,
    the pool's keyword arguments (``host``, ``port``, ``max_connections``, ``timeout``...), or
    ``{"master_name": ..., "sentinels": [...], **pool_kwargs}`` (an asyncio ``SafeSentinel`` pool).
    Every pool for one server shares its process-wide budget, whichever event loop made it."""
    host = dict(host)
    if "master_name" in host:
        from .asyncio_sentinel import SafeSentinel, SafeSentinelConnectionPool

        service = host.pop("master_name")
        sentinel = SafeSentinel(host.pop("sentinels"), sentinel_kwargs=host.pop("sentinel_kwargs", None))
        return SafeSentinelConnectionPool(service, sentinel, **host)
    if "address" in host:
        return SafeConnectionPool.from_url(host.pop("address"), **host)
    return SafeConnectionPool(**host)


class RedisChannelLayer(_RedisChannelLayer):
    """``channels_redis.core.RedisChannelLayer`` on asyncio ``SafeConnectionPool``s.

    ``CHANNEL_LAYERS = {"default": {"BACKEND": "redis_safepool.channels.RedisChannelLayer",
    "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:6379/0", "max_connections": 8}]}}}``"""

    def create_pool(self, index: int) -> Any:
        return create_pool(self.hosts[index])


class _SafeShard(_Shard):
    """One host's publish/subscribe connection of the pubsub layer, on a safe pool."""

    def _ensure_redis(self) -> None:
        if getattr(self, "_redis", None) is None:  # channels_redis' own check, untyped
            client: Any = aioredis.Redis(connection_pool=create_pool(self.host))
            self._redis, self._pubsub = client, client.pubsub()


class RedisPubSubChannelLayer(_RedisPubSubChannelLayer):
    """``channels_redis.pubsub.RedisPubSubChannelLayer`` on asyncio ``SafeConnectionPool``s
    (``"BACKEND": "redis_safepool.channels.RedisPubSubChannelLayer"``, same ``CONFIG``)."""

    def _get_layer(self) -> Any:
        layer = super()._get_layer()
        # channels_redis makes its shards (no connection yet) with its own pool factory
        if not all(isinstance(shard, _SafeShard) for shard in layer._shards):
            layer._shards = [_SafeShard(shard.host, layer) for shard in layer._shards]
        return layer
