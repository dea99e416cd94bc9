"""RQ on the safe pool: a client class for ``--connection-class`` that never keeps a plain pool."""

from __future__ import annotations

from typing import Any, Dict, Optional

import redis

from .pool import SafeConnectionPool

__all__ = ["Redis", "safe_twin"]

# The pool classes RQ (and redis.Redis itself) build; a subclass is the user's choice, kept.
_PLAIN = (redis.ConnectionPool, redis.BlockingConnectionPool)
_DEFAULT_MAX: Dict[type, Optional[int]] = {}


def _default_max(cls: type) -> Optional[int]:
    if cls not in _DEFAULT_MAX:
        _DEFAULT_MAX[cls] = cls().max_connections  # no connection is made
    return _DEFAULT_MAX[cls]


def safe_twin(plain: Any) -> SafeConnectionPool:
    """A ``SafeConnectionPool`` with ``plain``'s connection class and settings.

    The budget is the endpoint's budget in force (set by the first pool of the process for
    that server, or inherited through a fork) unless ``plain`` was given a ``max_connections``
    of its own."""
    asked = plain.max_connections
    kwargs: Dict[str, Any] = dict(plain.connection_kwargs)
    if asked != _default_max(type(plain)):
        kwargs["max_connections"] = asked
    if isinstance(plain, redis.BlockingConnectionPool):
        kwargs["timeout"] = plain.timeout
    return SafeConnectionPool(connection_class=plain.connection_class, **kwargs)


class Redis(redis.Redis):
    """``redis.Redis`` whose pool is always a ``SafeConnectionPool``.

    RQ rebuilds its client in the scheduler and in every ``rq worker-pool`` child as
    ``connection.__class__(connection_pool=redis.ConnectionPool(...))`` from the first
    client's class and settings; with this class those pools are safe pools on the
    endpoint's budget. ``rq worker --connection-class redis_safepool.rq.Redis --url
    'redis://host:6379/0?max_connections=8'`` (``rq worker-pool`` alike)."""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "Redis":
        single = kwargs.pop("single_connection_client", False)
        client = cls(connection_pool=SafeConnectionPool.from_url(url, **kwargs),
                     single_connection_client=single)
        client.auto_close_connection_pool = True
        return client

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        owned = False
        if type(kwargs.get("connection_pool")) in _PLAIN:
            kwargs["connection_pool"], owned = safe_twin(kwargs["connection_pool"]), True
        super().__init__(*args, **kwargs)
        if type(self.connection_pool) in _PLAIN:  # built by redis.Redis from host=, port=, ...
            plain, self.connection_pool = self.connection_pool, safe_twin(self.connection_pool)
            if self.connection is not None:  # single_connection_client: it took one already
                plain.release(self.connection)
                self.connection = self.connection_pool.get_connection()
            plain.disconnect()
            owned = True
        if owned:
            self.auto_close_connection_pool = True
