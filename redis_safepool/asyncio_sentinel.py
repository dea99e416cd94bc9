"""asyncio Sentinel pools whose budget follows the master: redis_safepool.sentinel's logic, awaited."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import redis.asyncio.sentinel as _lib
import redis.backoff
import redis.exceptions
from redis.asyncio.client import Redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry

from . import exceptions as _exceptions
from .sentinel import (
    Address,
    MasterChangedError,
    SentinelConnectionPoolLogic,
    SentinelFamily,
    SentinelLogic,
    SentinelManagedConnectionLogic,
)

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


REDIS_ASYNC_FAMILY = SentinelFamily.of(
    exceptions=redis.exceptions, sentinel=_lib, client=Redis, retry=Retry, backoff=redis.backoff,
    errors=_exceptions, master_changed=MasterChangedError, safe_pool=_safe_pool_class)
MasterNotFoundError = _lib.MasterNotFoundError
SlaveNotFoundError = _lib.SlaveNotFoundError


async def _awaited(fn: Any, *args: Any) -> Any:
    """The asyncio flavors' ``_io`` in the shared flows (see ``sentinel.run_sync``)."""
    return await fn(*args)


class AsyncSentinelManagedConnectionLogic(SentinelManagedConnectionLogic):
    """``SentinelManagedConnectionLogic`` for asyncio connections: the same checks, awaited.

    The library routes every connect through ``connect_check_health`` where it
    has one (redis-py 6+), else through ``connect``; both are guarded."""

    _family = REDIS_ASYNC_FAMILY

    def _library(self) -> Any:
        """The library's connection methods (past the sync logic's, which this replaces)."""
        return super(SentinelManagedConnectionLogic, self)

    async def connect(self) -> None:  # type: ignore[override]
        if self.is_connected:
            return
        pool: Any = self._owner_pool()  # the asyncio pool logic: its checks are coroutines
        if pool is not None and pool.is_master:
            await pool._check_master_before_connect(self)  # outside the library's retry
            self._master_checked = True
        try:
            if pool is not None and not hasattr(self._library(), "connect_check_health"):
                await self._guarded(pool, self._library().connect)
            else:
                await self._library().connect()
        finally:
            self._master_checked = False

    async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if self.is_connected:
            return
        pool = self._owner_pool()
        parent = self._library().connect_check_health
        if pool is None:
            return await parent(*args, **kwargs)
        await self._guarded(pool, lambda: parent(*args, **kwargs))

    _io = staticmethod(_awaited)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        try:
            return await self._library().read_response(*args, **kwargs)
        except self._family.ReadOnlyError:
            await self._demoted()
            raise


class SafeSentinelManagedConnection(AsyncSentinelManagedConnectionLogic, Connection):  # type: ignore[misc]
    """A redis.asyncio connection pinned to the address it was created for."""


class SafeSentinelManagedSSLConnection(SafeSentinelManagedConnection, SSLConnection):  # type: ignore[misc]
    """TLS variant of ``SafeSentinelManagedConnection``."""


class AsyncSentinelConnectionPoolLogic(SentinelConnectionPoolLogic):
    """``SentinelConnectionPoolLogic`` on per-address asyncio ``SafeConnectionPool`` budgets.

    The books (inner pool per address, retired pools, connections out) are the
    sync logic's; what talks to Sentinel or to a connection is awaited."""

    _family = REDIS_ASYNC_FAMILY

    @property
    def master_address(self) -> Optional[Address]:
        return self._master

    @master_address.setter
    def master_address(self, value: Any) -> None:
        pass  # the library's base sets it in __init__ and reset(); the books keep _master

    def _drop_idle(self, inner: Any) -> None:
        inner._bury_idle()  # the core closes each on its own loop

    def _close_inner(self, inner: Any) -> None:
        inner._close_core()
        inner._bury_idle()

    _io = staticmethod(_awaited)

    async def get_master_address(self, fresh: bool = False) -> Address:  # type: ignore[override]
        return await self._master_address(fresh)

    async def _check_master_before_connect(self, conn: Any) -> None:  # type: ignore[override]
        await self._check_master(conn)

    async def _master_suspect(self) -> None:  # type: ignore[override]
        await self._suspect()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return await self._checkout(args, kwargs)

    async def _hand_out(self, inner: Any, args: tuple, kwargs: dict) -> Any:  # type: ignore[override]
        conn = await inner.get_connection(*args, **kwargs)
        if self._book_out(inner, conn):
            return conn
        await conn.disconnect()
        await inner.release(conn)
        return None

    async def release(self, connection: Any) -> None:  # type: ignore[override]
        inner, retired, close_inner = self._book_in(connection)
        if retired:
            await connection.disconnect()  # a connection to a former master is never reused
        try:
            await inner.release(connection)
        finally:
            if close_inner:
                self._close_inner(inner)

    def make_connection(self) -> Any:
        if self._master is None:
            raise self._family.MasterNotFoundError(
                f"{self.service_name!r}: no master known yet (get_connection() resolves it)")
        return self._pool_for(self._master).make_connection()

    async def disconnect(self, inuse_connections: bool = True) -> None:  # type: ignore[override]
        await asyncio.gather(*(inner.disconnect(inuse_connections=inuse_connections)
                               for inner in self._all_inner()))

    async def aclose(self) -> None:
        pools = self._all_inner()
        self.close()
        await asyncio.gather(*(inner.disconnect() for inner in pools), return_exceptions=True)


class SafeSentinelConnectionPool(AsyncSentinelConnectionPoolLogic, _lib.SentinelConnectionPool):  # type: ignore[misc]
    """``redis.asyncio.sentinel.SentinelConnectionPool`` on per-address asyncio
    ``SafeConnectionPool`` budgets (shared with every other pool of the process for the server)."""

    _managed = SafeSentinelManagedConnection
    _managed_ssl = SafeSentinelManagedSSLConnection


class _Flights:
    """Concurrent lookups of one key on one event loop share one query."""

    def __init__(self) -> None:
        self._running: Dict[Tuple[int, Any], "asyncio.Future[Any]"] = {}

    async def do(self, key: Any, fn: Any) -> Any:
        loop = asyncio.get_running_loop()
        slot = (id(loop), key)
        running = self._running.get(slot)
        if running is not None:
            return await asyncio.shield(running)
        task = loop.create_task(fn())
        self._running[slot] = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._running.pop(slot, None)
            else:
                task.add_done_callback(lambda _t: self._running.pop(slot, None))


class AsyncSentinelLogic(SentinelLogic):
    """``SentinelLogic`` for asyncio: bounded sentinel pools, backoff, coalesced lookups (per
    event loop) and the short answer cache, awaited."""

    _family = REDIS_ASYNC_FAMILY

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._async_flights = _Flights()

    _io = staticmethod(_awaited)

    async def discover_master(self, service_name: str, fresh: bool = False) -> Address:  # type: ignore[override]
        cached = self._cached_master(service_name, fresh)
        if cached is not None:
            return cached
        return await self._async_flights.do(("master", service_name, fresh),
                                            lambda: self._discover_master(service_name))

    async def latest_master_since(self, service_name: str) -> Tuple[float, Address]:  # type: ignore[override]
        return await self._latest_master_since(service_name)

    async def discover_slaves(self, service_name: str) -> List[Address]:  # type: ignore[override]
        return await self._discover_slaves(service_name)

    async def aclose(self) -> None:  # type: ignore[override]
        for sentinel in self.sentinels:
            await sentinel.aclose(close_connection_pool=True)

    if TYPE_CHECKING:
        def close(self) -> None: ...


class SafeSentinel(AsyncSentinelLogic, _lib.Sentinel):  # type: ignore[misc]
    """``redis.asyncio.sentinel.Sentinel`` whose ``master_for``/``slave_for`` build safe pools
    (asyncio ``SafeConnectionPool``s per address), with bounded, backed-off, coalesced queries."""

    _pool_class = SafeSentinelConnectionPool
