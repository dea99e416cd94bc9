"""SafeConnectionPool for valkey-py: the same C core and budgets as the redis-py pools."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import valkey.asyncio.connection as _async_conn
import valkey.connection as _conn

from .. import _core
from .._pool_base import DEFAULT_TIMEOUT
from .._close_dropped import add_async_connection_class
from .._endpoint_keys import add_transports
from ..pool import SyncPoolMethods
from . import exceptions
from .exceptions import *  # noqa: F403 (every error, named once in exceptions.__all__)

__all__ = [
    "SafeConnectionPool",
    "BlockingSafeConnectionPool",
    *exceptions.__all__,
]

add_transports(
    unix=(_conn.UnixDomainSocketConnection, _async_conn.UnixDomainSocketConnection),
    tls=(_conn.SSLConnection, _async_conn.SSLConnection),
)
add_async_connection_class(_async_conn.AbstractConnection)


class SafeConnectionPool(_core.PoolCore, SyncPoolMethods, _conn.ConnectionPool):
    """A drop-in ``valkey.ConnectionPool`` / ``BlockingConnectionPool``.

    The same pool as ``redis_safepool.SafeConnectionPool``, for valkey-py
    clients: it draws from the same process-wide budget of the server (a
    valkey pool and a redis-py pool for one server share it), takes
    ``valkey://``, ``valkeys://``, ``redis://``, ``rediss://`` and ``unix://``
    URLs, and raises the errors of ``redis_safepool.valkey.exceptions``,
    which are ``valkey.exceptions.ConnectionError`` subclasses (a pool
    timeout is a ``valkey.exceptions.MaxConnectionsError``).
    """

    _client_pool = _conn.ConnectionPool
    _client = ("valkey", "sync")
    _errors = exceptions

    if TYPE_CHECKING:  # SyncPoolMethods makes one of the client family's connections
        def make_connection(self) -> _conn.Connection: ...

    def __init__(
        self,
        connection_class: type = _conn.Connection,
        max_connections: Optional[int] = None,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(connection_class, max_connections, timeout, **kwargs)


BlockingSafeConnectionPool = SafeConnectionPool
