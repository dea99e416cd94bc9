"""asyncio Sentinel pools for valkey-py: redis_safepool.asyncio_sentinel's logic on valkey.asyncio's classes."""

from __future__ import annotations

import valkey.asyncio.sentinel as _lib
import valkey.backoff
import valkey.exceptions
from valkey.asyncio.client import Valkey
from valkey.asyncio.connection import Connection, SSLConnection
from valkey.asyncio.retry import Retry

from .. import asyncio_sentinel as _base
from .. import sentinel as _sync_base
from . import exceptions
from .sentinel import MasterChangedError, ValkeyClientArgument

__all__ = [
    "SafeSentinel",
    "SafeSentinelConnectionPool",
    "SafeSentinelManagedConnection",
    "SafeSentinelManagedSSLConnection",
    "MasterChangedError",
    "MasterNotFoundError",
    "SlaveNotFoundError",
]


def _safe_pool_class() -> type:
    from .asyncio import SafeConnectionPool

    return SafeConnectionPool


VALKEY_ASYNC_FAMILY = _sync_base.SentinelFamily.of(
    exceptions=valkey.exceptions, sentinel=_lib, client=Valkey, retry=Retry, backoff=valkey.backoff,
    errors=exceptions, master_changed=MasterChangedError, safe_pool=_safe_pool_class)
MasterNotFoundError = _lib.MasterNotFoundError
SlaveNotFoundError = _lib.SlaveNotFoundError


class SafeSentinelManagedConnection(  # type: ignore[misc]
        _base.AsyncSentinelManagedConnectionLogic, Connection):
    """A valkey.asyncio connection pinned to the address it was created for."""

    _family = VALKEY_ASYNC_FAMILY


class SafeSentinelManagedSSLConnection(  # type: ignore[misc]
        SafeSentinelManagedConnection, SSLConnection):
    """TLS variant of ``SafeSentinelManagedConnection``."""


class SafeSentinelConnectionPool(  # type: ignore[misc]
        _base.AsyncSentinelConnectionPoolLogic, _lib.SentinelConnectionPool):
    """``valkey.asyncio.sentinel.SentinelConnectionPool`` on per-address asyncio valkey
    ``SafeConnectionPool`` budgets (shared with every other pool of the process for the server)."""

    _family = VALKEY_ASYNC_FAMILY
    _managed = SafeSentinelManagedConnection
    _managed_ssl = SafeSentinelManagedSSLConnection


class SafeSentinel(ValkeyClientArgument, _base.AsyncSentinelLogic, _lib.Sentinel):  # type: ignore[misc]
    """``valkey.asyncio.sentinel.Sentinel`` whose ``master_for``/``slave_for`` build safe pools,
    with bounded, backed-off and coalesced sentinel queries."""

    _family = VALKEY_ASYNC_FAMILY
    _pool_class = SafeSentinelConnectionPool
