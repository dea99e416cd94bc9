"""Celery/kombu on the safe pool: a kombu transport and a result backend whose pools are SafeConnectionPools.

Two settings (and the broker URL) put both halves of a Celery app on the pool::

    broker_url = "redis://127.0.0.1:6379/0"
    broker_transport = "redis_safepool.celery:Transport"
    result_backend = "redis_safepool.celery:ResultBackend+redis://127.0.0.1:6379/1"

Every channel and every backend client of a process then draws
from one budget per server: ``broker_transport_options={"max_connections": N}``
and ``redis_max_connections`` set them.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend
from kombu.transport import redis as kombu_redis

from .pool import SafeConnectionPool

__all__ = ["Channel", "Transport", "ResultBackend"]


class Channel(kombu_redis.Channel):
    """kombu's redis channel, with its pools (sync and the event loop's) made safe."""

    def _get_pool(self, asynchronous: bool = False) -> SafeConnectionPool:
        # A channel closed after a connection loss asks for its pool again to
        # give back unacked messages, when kombu has already dropped the
        # transport's client (the settings): build it from the first ones.
        known = self.__dict__.setdefault("_safepool_params", {})
        if asynchronous not in known or self.connection.client is not None:
            known[asynchronous] = self._connparams(asynchronous=asynchronous)
        params = dict(known[asynchronous])
        self.keyprefix_fanout = self.keyprefix_fanout.format(db=params["db"])
        return SafeConnectionPool(**params)


class Transport(kombu_redis.Transport):
    """kombu's redis transport on ``SafeConnectionPool``."""

    Channel = Channel


class ResultBackend(RedisBackend):
    """Celery's redis result backend on ``SafeConnectionPool`` (Celery never passes it a pool)."""

    def __init__(self, *args: Any, connection_pool: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, connection_pool=connection_pool or SafeConnectionPool, **kwargs)
