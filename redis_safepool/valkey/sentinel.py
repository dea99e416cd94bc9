"""Sentinel-managed valkey-py pools: redis_safepool.sentinel's logic on valkey's classes and errors."""

from __future__ import annotations

from typing import Any

import valkey.backoff
import valkey.exceptions
import valkey.sentinel as _lib
from valkey.client import Valkey
from valkey.connection import Connection, SSLConnection
from valkey.retry import Retry

from .. import sentinel as _base
from . import exceptions

__all__ = [
    "SafeSentinel",
    "SafeSentinelConnectionPool",
    "SafeSentinelManagedConnection",
    "SafeSentinelManagedSSLConnection",
    "MasterChangedError",
    "MasterNotFoundError",
    "SlaveNotFoundError",
]


class MasterChangedError(valkey.exceptions.ConnectionError, _base.MasterChangedError):
    """Sentinel names another master than the one this connection is bound to."""


def _safe_pool_class() -> type:
    from . import SafeConnectionPool

    return SafeConnectionPool


VALKEY_FAMILY = _base.SentinelFamily.of(
    exceptions=valkey.exceptions, sentinel=_lib, client=Valkey, retry=Retry, backoff=valkey.backoff,
    errors=exceptions, master_changed=MasterChangedError, safe_pool=_safe_pool_class)
MasterNotFoundError = _lib.MasterNotFoundError
SlaveNotFoundError = _lib.SlaveNotFoundError


class SafeSentinelManagedConnection(  # type: ignore[misc]
        _base.SentinelManagedConnectionLogic, Connection):
    """A valkey-py connection pinned to the address it was created for."""

    _family = VALKEY_FAMILY


class SafeSentinelManagedSSLConnection(  # type: ignore[misc]
        SafeSentinelManagedConnection, SSLConnection):
    """TLS variant of ``SafeSentinelManagedConnection``."""


class SafeSentinelConnectionPool(  # type: ignore[misc]
        _base.SentinelConnectionPoolLogic, _lib.SentinelConnectionPool):
    """``valkey.sentinel.SentinelConnectionPool`` on per-address valkey ``SafeConnectionPool``
    budgets (shared with every other pool of the process for the same server)."""

    _family = VALKEY_FAMILY
    _managed = SafeSentinelManagedConnection
    _managed_ssl = SafeSentinelManagedSSLConnection


class ValkeyClientArgument:
    """valkey-py's ``Sentinel.master_for``/``slave_for`` name the client argument
    ``valkey_class``: redis-py's ``redis_class`` is taken too (mixin before the logic class)."""

    _family: _base.SentinelFamily
    _pool_class: type

    def master_for(self, service_name: str, redis_class: Any = None,
                   connection_pool_class: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("valkey_class", redis_class or self._family.client)
        return super(_base.SentinelLogic, self).master_for(  # type: ignore[misc]
            service_name, connection_pool_class=connection_pool_class or self._pool_class,
            **kwargs)

    def slave_for(self, service_name: str, redis_class: Any = None,
                  connection_pool_class: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("valkey_class", redis_class or self._family.client)
        return super(_base.SentinelLogic, self).slave_for(  # type: ignore[misc]
            service_name, connection_pool_class=connection_pool_class or self._pool_class,
            **kwargs)


class SafeSentinel(ValkeyClientArgument, _base.SentinelLogic, _lib.Sentinel):  # type: ignore[misc]
    """``valkey.sentinel.Sentinel`` whose ``master_for``/``slave_for`` build safe pools,
    with bounded, backed-off and coalesced sentinel queries."""

    _family = VALKEY_FAMILY
    _pool_class = SafeSentinelConnectionPool
