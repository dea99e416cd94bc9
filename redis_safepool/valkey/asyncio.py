"""asyncio SafeConnectionPool for valkey-py: the twin of redis_safepool.asyncio for valkey.asyncio."""

from __future__ import annotations

from typing import Any, Optional

import valkey.asyncio.connection as _async_conn

from .. import _core
from ..asyncio import AsyncPoolMethods, _fd_of
from . import exceptions

__all__ = ["SafeConnectionPool", "BlockingSafeConnectionPool"]


class SafeConnectionPool(AsyncPoolMethods, _core.PoolCore, _async_conn.ConnectionPool):
    """A drop-in ``valkey.asyncio.ConnectionPool`` / ``BlockingConnectionPool``.

    Shares the process-wide per-endpoint budget with every other pool for the
    server (sync or asyncio, valkey-py or redis-py); waiting never blocks the
    event loop, is FIFO, honours ``timeout`` and is cancellation-safe. Errors
    are those of ``redis_safepool.valkey.exceptions``.
    """

    _client_pool = _async_conn.ConnectionPool
    _client = ("valkey", "asyncio")
    _errors = exceptions

    def __init__(
        self,
        connection_class: type = _async_conn.Connection,
        max_connections: Optional[int] = None,
        timeout: Optional[float] = 20.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(connection_class, max_connections, timeout, **kwargs)

    async def release(self, connection: Any) -> None:  # type: ignore[override]
        # valkey-py's connections have no maintenance notifications to reconnect on
        self._release_fd(connection, _fd_of(connection))


BlockingSafeConnectionPool = SafeConnectionPool
