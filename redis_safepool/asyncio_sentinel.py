"""asyncio Sentinel pools whose budget follows the master: redis_safepool.sentinel's logic, awaited."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from redis.asyncio.client import Redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SlaveNotFoundError,
)
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, ReadOnlyError, ResponseError, TimeoutError

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


REDIS_ASYNC_FAMILY = SentinelFamily(
    connection_error=ConnectionError, timeout_error=TimeoutError, read_only_error=ReadOnlyError,
    response_error=ResponseError, master_not_found=MasterNotFoundError,
    slave_not_found=SlaveNotFoundError, master_changed=MasterChangedError, errors=_exceptions,
    client=Redis, retry=Retry, no_backoff=NoBackoff, safe_pool=_safe_pool_class,
    plain_managed_connection=SentinelManagedConnection)


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
        pool = self._owner_pool()
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

    async def _guarded(self, pool: Any, connect: Any) -> None:
        if pool.is_master and not self._master_checked:
            await pool._check_master_before_connect(self)
        self._master_checked = False  # a retry inside connect() checks again
        address = (self.host, int(self.port))
        fam = self._family
        if not pool.connect_backoff.claim(address):
            raise fam.errors.ServerUnavailableError(
                f"{self.host}:{self.port} failed recently; next attempt in "
                f"{pool.connect_backoff.remaining(address):.3f}s")
        try:
            await connect()
        except (fam.ConnectionError, fam.TimeoutError):
            pool.connect_backoff.failed(address)
            raise
        pool.connect_backoff.succeeded(address)
        if pool.is_master:  # asked again once connected (see the sync logic)
            try:
                await pool._check_master_before_connect(self)
            except BaseException:
                await self.disconnect()
                raise

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self._library().read_response(*args, **kwargs)
        except self._family.ReadOnlyError:
            pool = self._owner_pool()
            if pool is not None and pool.is_master:
                await self.disconnect()
                await pool._master_suspect()
                raise self._family.ConnectionError("The previous master is now a replica")
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
        inner._drain_idle()  # the core closes each on its own loop

    def _close_inner(self, inner: Any) -> None:
        inner._close_core()
        inner._drain_idle()

    async def get_master_address(self, fresh: bool = False) -> Address:  # type: ignore[override]
        manager = self.sentinel_manager
        since = None
        if isinstance(manager, AsyncSentinelLogic):
            await manager.discover_master(self.service_name, fresh=fresh)
            since, address = await manager.latest_master_since(self.service_name)
        else:
            address = tuple(await manager.discover_master(self.service_name))
        return self._bind_answer(address, since)

    async def _check_master_before_connect(self, conn: Any) -> None:  # type: ignore[override]
        address = await self.get_master_address(fresh=True)
        if address != (conn.host, int(conn.port)):
            raise self._family.MasterChangedError(
                f"{self.service_name!r} moved from {conn.host}:{conn.port} to "
                f"{address[0]}:{address[1]}")

    async def _master_suspect(self) -> None:  # type: ignore[override]
        try:
            await self.get_master_address()
        except self._family.ConnectionError:
            pass

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if self.is_master:
            return await self._get_master_connection(args, kwargs)
        return await self._get_replica_connection(args, kwargs)

    async def _hand_out(self, inner: Any, args: tuple, kwargs: dict) -> Any:  # type: ignore[override]
        conn = await inner.get_connection(*args, **kwargs)
        if self._book_out(inner, conn):
            return conn
        await conn.disconnect()
        await inner.release(conn)
        return None

    async def _get_master_connection(self, args: tuple, kwargs: dict) -> Any:  # type: ignore[override]
        fam = self._family
        last: Optional[BaseException] = None
        for _ in range(3):  # bounded: one re-resolution per failover step
            master = self._master or await self.get_master_address()
            try:
                conn = await self._hand_out(self._pool_for(master), args, kwargs)
            except fam.errors.PoolTimeoutError:
                raise
            except (fam.ConnectionError, fam.TimeoutError) as exc:
                last = exc
                try:
                    moved = await self.get_master_address() != master
                except fam.MasterNotFoundError:
                    moved = False
                if not moved:
                    raise
                continue
            if conn is not None:
                return conn
        raise last if last is not None else fam.MasterNotFoundError(
            f"No stable master found for {self.service_name!r}")

    async def _replica_addresses(self, refresh: bool = False) -> List[Address]:  # type: ignore[override]
        with self._state_lock:
            cached = list(self._replicas)
        if cached and not refresh:
            return cached
        try:
            replicas = await self.sentinel_manager.discover_slaves(self.service_name)
        except self._family.ConnectionError:
            replicas = []
        with self._state_lock:
            self._replicas = [(str(h), int(p)) for h, p in replicas]
            return list(self._replicas)

    async def _get_replica_connection(self, args: tuple, kwargs: dict) -> Any:  # type: ignore[override]
        fam = self._family
        replicas = await self._replica_addresses()
        with self._state_lock:
            self._replica_rr += 1
            order = [replicas[(self._replica_rr + i) % len(replicas)] for i in range(len(replicas))]
        last: Optional[BaseException] = None
        for address in order:
            try:
                conn = await self._hand_out(self._pool_for(address), args, kwargs)
            except fam.errors.PoolTimeoutError:
                raise
            except (fam.ConnectionError, fam.TimeoutError) as exc:
                last = exc
                await self._replica_addresses(refresh=True)
                continue
            if conn is not None:
                return conn
        try:  # fall back to the master, like redis-py
            conn = await self._hand_out(self._pool_for(await self.get_master_address()), args, kwargs)
            if conn is not None:
                return conn
        except fam.MasterNotFoundError:
            pass
        raise fam.SlaveNotFoundError(f"No replica found for {self.service_name!r}") from last

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


class SafeSentinelConnectionPool(AsyncSentinelConnectionPoolLogic, SentinelConnectionPool):  # type: ignore[misc]
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

    async def _ask(self, sentinel: Any, fn: Any) -> Any:  # type: ignore[override]
        key = self._name(sentinel)
        self.sentinel_queries += 1
        try:
            result = await fn(sentinel)
        except (self._family.ConnectionError, self._family.TimeoutError):
            self.sentinel_backoff.failed(key)
            raise
        self.sentinel_backoff.succeeded(key)
        return result

    async def discover_master(self, service_name: str, fresh: bool = False) -> Address:  # type: ignore[override]
        known = self._known_masters.get(service_name)
        if not fresh and known is not None and known[1] is not None and \
                self._fresh_enough(known[0]):
            return known[1]
        return await self._async_flights.do(("master", service_name, fresh),
                                            lambda: self._discover_master(service_name))

    async def latest_master_since(self, service_name: str) -> Tuple[float, Address]:  # type: ignore[override]
        known = self._known_masters.get(service_name)
        if known is None or known[1] is None:
            await self.discover_master(service_name, fresh=True)
            known = self._known_masters.get(service_name)
        if known is None or known[1] is None:
            raise self._family.MasterNotFoundError(f"No master found for {service_name!r}")
        return known[0], known[1]

    async def _discover_master(self, service_name: str) -> Address:  # type: ignore[override]
        fam = self._family
        started, ready, errors = self._lookup_start(service_name)
        for index, sentinel in ready:
            try:
                masters = await self._ask(sentinel, lambda s: s.sentinel_masters())
            except (fam.ConnectionError, fam.TimeoutError) as exc:
                errors.append(f"{self._name(sentinel)} - {exc!r}")
                continue
            address = self._lookup_answer(service_name, started, index, sentinel, masters)
            if address is not None:
                return address
        raise self._lookup_failed(service_name, started, errors)

    async def discover_slaves(self, service_name: str) -> List[Address]:  # type: ignore[override]
        for _, sentinel in self._ready_sentinels():
            try:
                replicas = await self._ask(sentinel, lambda s: s.sentinel_slaves(service_name))
            except (self._family.ConnectionError, self._family.ResponseError,
                    self._family.TimeoutError):
                continue
            replicas = self.filter_slaves(replicas)
            if replicas:
                return [(str(h), int(p)) for h, p in replicas]
        return []

    async def aclose(self) -> None:  # type: ignore[override]
        for sentinel in self.sentinels:
            await sentinel.aclose(close_connection_pool=True)

    if TYPE_CHECKING:
        def close(self) -> None: ...


class SafeSentinel(AsyncSentinelLogic, Sentinel):  # type: ignore[misc]
    """``redis.asyncio.sentinel.Sentinel`` whose ``master_for``/``slave_for`` build safe pools
    (asyncio ``SafeConnectionPool``s per address), with bounded, backed-off, coalesced queries."""

    _pool_class = SafeSentinelConnectionPool
