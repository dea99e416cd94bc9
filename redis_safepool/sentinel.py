"""Sentinel-managed pools whose budget follows the master, and a Sentinel client with bounded backoff."""

from __future__ import annotations

import logging

import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Type

from redis.backoff import NoBackoff
from redis.client import Redis
from redis.connection import Connection, SSLConnection
from redis.exceptions import ConnectionError, ReadOnlyError, ResponseError, TimeoutError
from redis.retry import Retry
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SlaveNotFoundError,
)

from . import exceptions as _exceptions
from ._rediscovery import Backoff, SingleFlight

__all__ = [
    "SafeSentinel",
    "SafeSentinelConnectionPool",
    "SafeSentinelManagedConnection",
    "SafeSentinelManagedSSLConnection",
    "MasterChangedError",
    "MasterNotFoundError",
    "SlaveNotFoundError",
]

Address = Tuple[str, int]
Exc = Type[Exception]
_OWNER = "_safepool_sentinel_owner"  # attribute set on every connection we hand out

logger = logging.getLogger("redis_safepool")


def run_sync(flow: Any) -> Any:
    """Run a flow to its end when every ``await`` in it is a sync flavor's ``_io``.

    The flows of the logic classes are coroutines written once for both
    flavors: the sync classes' ``_io`` calls and returns, so the coroutine
    never suspends and one ``send`` finishes it; the asyncio classes' ``_io``
    awaits, and they await the flows."""
    try:
        flow.send(None)
    except StopIteration as done:
        return done.value
    flow.close()
    raise RuntimeError("a sync Sentinel flow suspended")


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """The sync flavors' ``_io``: call ``fn``, nothing to await."""
    return fn(*args)


def _owner_of(connection: Any) -> Any:
    """The inner pool that handed ``connection`` out, or None."""
    ref = getattr(connection, _OWNER, None)
    return ref() if ref is not None else None


class MasterChangedError(ConnectionError):
    """Sentinel names another master than the one this connection is bound to.

    The connection is never used again; the next command gets a connection to
    the new master (from the new master's budget)."""


def _safe_pool_class() -> type:
    from .pool import SafeConnectionPool  # imported late: the C core may be absent at import

    return SafeConnectionPool


class SentinelFamily:
    """What one client library (redis-py, valkey-py) gives the Sentinel classes below.

    The logic is the same for every library; the errors it raises and
    catches, the client class of the sentinels and the inner pools are the
    library's own (a valkey-py socket error is no redis-py ConnectionError)."""

    def __init__(self, *, connection_error: Exc, timeout_error: Exc, read_only_error: Exc,
                 response_error: Exc, master_not_found: Exc, slave_not_found: Exc,
                 master_changed: Exc, errors: Any, client: Any, retry: Any, no_backoff: Any,
                 safe_pool: Callable[[], type], plain_managed_connection: type) -> None:
        self.ConnectionError = connection_error
        self.TimeoutError = timeout_error
        self.ReadOnlyError = read_only_error
        self.ResponseError = response_error
        self.MasterNotFoundError = master_not_found
        self.SlaveNotFoundError = slave_not_found
        self.MasterChangedError = master_changed
        self.errors = errors            # PoolTimeoutError, PoolClosedError, ... of the family
        self.client = client            # the client class of the sentinels (Redis, Valkey)
        self.retry = retry
        self.no_backoff = no_backoff
        self.safe_pool = safe_pool      # the family's SafeConnectionPool (imported late)
        self.plain_managed_connection = plain_managed_connection  # follows the master: refused

    @classmethod
    def of(cls, *, exceptions: Any, sentinel: Any, client: Any, retry: Any, backoff: Any,
           errors: Any, master_changed: Exc, safe_pool: Callable[[], type]) -> "SentinelFamily":
        """The family of a library from its modules (``exceptions``, ``sentinel``, ``backoff``)."""
        return cls(connection_error=exceptions.ConnectionError, timeout_error=exceptions.TimeoutError,
                   read_only_error=exceptions.ReadOnlyError, response_error=exceptions.ResponseError,
                   master_not_found=sentinel.MasterNotFoundError,
                   slave_not_found=sentinel.SlaveNotFoundError, master_changed=master_changed,
                   errors=errors, client=client, retry=retry, no_backoff=backoff.NoBackoff,
                   safe_pool=safe_pool, plain_managed_connection=sentinel.SentinelManagedConnection)


REDIS_FAMILY = SentinelFamily(
    connection_error=ConnectionError, timeout_error=TimeoutError, read_only_error=ReadOnlyError,
    response_error=ResponseError, master_not_found=MasterNotFoundError,
    slave_not_found=SlaveNotFoundError, master_changed=MasterChangedError, errors=_exceptions,
    client=Redis, retry=Retry, no_backoff=NoBackoff, safe_pool=_safe_pool_class,
    plain_managed_connection=SentinelManagedConnection)

# The logic classes below are mixins, completed by each library's bases; type
# checkers see redis-py's.
if TYPE_CHECKING:
    _ConnectionBase = Connection
    _PoolBase = SentinelConnectionPool
    _SentinelBase = Sentinel
else:
    _ConnectionBase = _PoolBase = _SentinelBase = object


class _OwnerRef:
    """What a connection knows about its Sentinel pool (weak, so pools can be collected)."""

    __slots__ = ("_ref", "__weakref__")

    def __init__(self, pool: "SentinelConnectionPoolLogic") -> None:
        self._ref = weakref.ref(pool)

    def __call__(self) -> Optional["SentinelConnectionPoolLogic"]:
        return self._ref()

    def __repr__(self) -> str:  # keep connection reprs and flavor labels short
        return "<sentinel-pool>"


class SentinelManagedConnectionLogic(_ConnectionBase):
    """A connection pinned to the address it was created for.

    Before opening a socket it asks Sentinel (coalesced, with backoff) whether
    that address is still the master; if not it raises ``MasterChangedError``
    instead of silently following the master (which would move the connection
    to another server's budget). A ``READONLY`` reply (the old master came
    back as a replica) disconnects it and makes the pool re-resolve."""

    _family: SentinelFamily = REDIS_FAMILY

    def __init__(self, **kwargs: Any) -> None:
        self._sentinel_owner: Optional[_OwnerRef] = kwargs.pop("sentinel_owner", None)
        self._master_checked = False  # connect() has just asked Sentinel
        super().__init__(**kwargs)

    def _owner_pool(self) -> Optional["SentinelConnectionPoolLogic"]:
        return self._sentinel_owner() if self._sentinel_owner is not None else None

    def connect(self) -> None:
        if self._sock:
            return
        pool = self._owner_pool()
        if pool is not None and pool.is_master:
            # Checked here, outside redis-py's connect retry, so a moved
            # master fails at once instead of after the retry's backoff.
            pool._check_master_before_connect(self)
            self._master_checked = True
        try:
            super().connect()
        finally:
            self._master_checked = False

    def connect_check_health(self, check_health: bool = True,
                             retry_socket_connect: bool = True) -> None:
        # Every connect ends here: redis-py's connect() and also its commands,
        # which reconnect a dropped socket through this method directly (a
        # command retried after an error would otherwise reach whatever
        # listens at the old address, such as an old master back up and
        # still believing it is master).
        if self._sock:
            return
        pool = self._owner_pool()
        parent = super().connect_check_health
        if pool is None:
            return parent(check_health=check_health, retry_socket_connect=retry_socket_connect)
        run_sync(self._guarded(pool, lambda: parent(
            check_health=check_health, retry_socket_connect=retry_socket_connect)))

    _io = staticmethod(_call)  # how a flow calls the library (the asyncio logic awaits)

    async def _guarded(self, pool: Any, connect: Callable[[], Any]) -> None:
        """One connect of a pool's connection: the master check, the connect backoff."""
        if pool.is_master and not self._master_checked:
            await self._io(pool._check_master_before_connect, self)
        self._master_checked = False  # a retry inside connect() checks again
        address = (self.host, int(self.port))
        fam = self._family
        if not pool.connect_backoff.claim(address):
            raise fam.errors.ServerUnavailableError(
                f"{self.host}:{self.port} failed recently; next attempt in "
                f"{pool.connect_backoff.remaining(address):.3f}s")
        try:
            await self._io(connect)
        except (fam.ConnectionError, fam.TimeoutError):
            pool.connect_backoff.failed(address)
            raise
        pool.connect_backoff.succeeded(address)
        if pool.is_master:
            # Ask again now that the connection exists: between the first
            # answer and the connect, this thread may have been held up while
            # a failover finished and the old master came back. A lookup
            # started after the connect cannot name it any more.
            try:
                await self._io(pool._check_master_before_connect, self)
            except BaseException:
                await self._io(self.disconnect)
                raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except self._family.ReadOnlyError:
            run_sync(self._demoted())
            raise

    async def _demoted(self) -> None:
        """A READONLY reply: on a master pool's connection, the master was demoted."""
        pool = self._owner_pool()
        if pool is not None and pool.is_master:
            await self._io(self.disconnect)
            await self._io(pool._master_suspect)
            raise self._family.ConnectionError("The previous master is now a replica")


class SafeSentinelManagedConnection(SentinelManagedConnectionLogic, Connection):
    """A redis-py connection pinned to the address it was created for (see the logic class)."""


class SafeSentinelManagedSSLConnection(SafeSentinelManagedConnection, SSLConnection):
    """TLS variant of ``SafeSentinelManagedConnection``."""


class SentinelConnectionPoolLogic(_PoolBase):
    """``SentinelConnectionPool`` behaviour on per-address ``SafeConnectionPool`` budgets.

    Master pools keep one inner ``SafeConnectionPool`` bound to the address
    Sentinel reports. When Sentinel reports another master, a new inner pool is
    bound to it (its budget is the new master's process-wide budget) and the
    old one is retired: its idle connections are closed at once, its in-use
    connections are closed when they come back, and it never hands out a
    connection again. Replica pools keep one inner pool per replica address.
    """

    _family: SentinelFamily = REDIS_FAMILY
    _managed: type = SentinelManagedConnectionLogic  # the family's SafeSentinelManagedConnection
    _managed_ssl: type = SentinelManagedConnectionLogic

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        self._safe_max = kwargs.pop("max_connections", None)
        self._safe_timeout = kwargs.pop("timeout", 20)
        cls = kwargs.get("connection_class")
        plain = self._family.plain_managed_connection
        if isinstance(cls, type) and issubclass(cls, plain) \
                and not issubclass(cls, SentinelManagedConnectionLogic):
            raise TypeError(
                f"{plain.__module__}.{plain.__name__} follows the master by itself, "
                "which would move a connection to another server's budget; use "
                f"{self._managed.__module__}.{self._managed.__name__} (or a subclass)")
        if "connection_class" not in kwargs:
            kwargs["connection_class"] = self._managed_ssl if kwargs.pop("ssl", False) \
                else self._managed
        self._state_lock = threading.RLock()
        self._inner: Dict[Address, Any] = {}          # address -> live SafeConnectionPool
        self._retired: Dict[int, Any] = {}           # id -> retired pool with connections out
        self._out: Dict[int, int] = {}                # id(inner pool) -> connections handed out
        self._master: Optional[Address] = None
        self._master_since = float("-inf")  # when the lookup behind _master started
        self._closed = False
        self._replicas: List[Address] = []
        self._replica_rr = 0
        backoff = kwargs.pop("connect_backoff", None)
        self.connect_backoff = backoff if backoff is not None else Backoff(0.05, 1.0)
        super().__init__(service_name, sentinel_manager, **kwargs)
        self.connection_kwargs.pop("connection_pool", None)  # redis-py's proxy: not ours
        if issubclass(self.connection_class, SentinelManagedConnectionLogic):
            self.connection_kwargs["sentinel_owner"] = _OwnerRef(self)
        self.max_connections = self._safe_max
        self.timeout = self._safe_timeout

    # -- address resolution ------------------------------------------------
    _io = staticmethod(_call)  # how a flow calls the library (the asyncio logic awaits)

    def get_master_address(self, fresh: bool = False) -> Address:
        """Ask Sentinel for the master and re-bind the pool if it moved.

        ``fresh`` skips SafeSentinel's short answer cache (before a connect:
        a cached answer from before a failover would let a connection reach
        a restarted old master that still believes it is master)."""
        return run_sync(self._master_address(fresh))

    async def _master_address(self, fresh: bool = False) -> Address:
        manager = self.sentinel_manager
        since = None
        if isinstance(manager, SentinelLogic):
            await manager._io(manager.discover_master, self.service_name, fresh)
            # Lookups are merged and may finish out of order: bind the answer
            # of the most recently *started* one, never a slow older one that
            # still names the master from before a failover.
            since, address = await manager._io(manager.latest_master_since, self.service_name)
        else:
            address = tuple(await self._io(manager.discover_master, self.service_name))
        return self._bind_answer(address, since)

    def _bind_answer(self, address: Any, since: Optional[float]) -> Address:
        """Bind Sentinel's answer (started at ``since``) and say where the master is."""
        address = (str(address[0]), int(address[1]))
        self._bind_master(address, since)
        with self._state_lock:
            # An answer older than the one bound meanwhile was not bound:
            # the newest answer is where the master is.
            return self._master if since is not None and self._master is not None else address

    @property
    def master_address(self) -> Optional[Address]:
        return self._master

    def _check_master_before_connect(self, conn: Any) -> None:
        run_sync(self._check_master(conn))

    async def _check_master(self, conn: Any) -> None:
        address = await self._master_address(fresh=True)
        if address != (conn.host, int(conn.port)):
            raise self._family.MasterChangedError(
                f"{self.service_name!r} moved from {conn.host}:{conn.port} to "
                f"{address[0]}:{address[1]}"
            )

    def _master_suspect(self) -> None:
        run_sync(self._suspect())

    async def _suspect(self) -> None:
        try:
            await self._master_address()
        except self._family.ConnectionError:
            pass

    def _bind_master(self, address: Address, since: Optional[float] = None) -> None:
        with self._state_lock:
            if since is not None:
                if since < self._master_since:
                    # Another thread bound a newer answer while this one was
                    # on its way: never go back to an older master.
                    return
                self._master_since = since
            if address == self._master and (self._closed or address in self._inner):
                return
            old = self._inner.pop(self._master, None) if self._master is not None else None
            moved_from, self._master = self._master, address
            close_now = old is not None and self._retire_locked(old)
        if moved_from is not None and moved_from != address:
            logger.warning("sentinel service %r: master moved from %s:%s to %s:%s",
                           self.service_name, moved_from[0], moved_from[1], address[0], address[1])
        if old is not None:
            self._drop_idle(old)  # idle ones: closed right away
            if close_now:
                self._close_inner(old)

    # How an inner pool lets go of its connections: the asyncio flavor's are
    # coroutines there, so it closes them through the core instead.
    def _drop_idle(self, inner: Any) -> None:
        inner.disconnect(inuse_connections=False)

    def _close_inner(self, inner: Any) -> None:
        inner.close()

    def _retire_locked(self, inner: Any) -> bool:
        """Mark ``inner`` retired; True if it has nothing out and may be closed now."""
        inner._sentinel_retired = True
        if self._out.get(id(inner), 0) > 0:
            self._retired[id(inner)] = inner  # closed by release() of its last connection
            return False
        self._out.pop(id(inner), None)
        return True

    def _pool_for(self, address: Address) -> Any:
        with self._state_lock:
            if self._closed:
                raise self._family.errors.PoolClosedError(f"{self!r} is closed")
            inner = self._inner.get(address)
            if inner is None:
                kwargs = dict(self.connection_kwargs)
                kwargs.update(host=address[0], port=address[1])
                if self._safe_max is not None:
                    kwargs["max_connections"] = self._safe_max
                inner = self._family.safe_pool()(connection_class=self.connection_class,
                                                 timeout=self._safe_timeout, **kwargs)
                inner._sentinel_retired = False
                self._inner[address] = inner
            return inner

    # -- checkout / checkin --------------------------------------------------
    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        return run_sync(self._checkout(args, kwargs))

    def _checkout(self, args: tuple, kwargs: dict) -> Any:
        if self.is_master:
            return self._master_connection(args, kwargs)
        return self._replica_connection(args, kwargs)

    def _hand_out(self, inner: Any, args: tuple, kwargs: dict) -> Any:
        conn = inner.get_connection(*args, **kwargs)
        if self._book_out(inner, conn):
            return conn
        # re-bound while we were getting it: never hand out an old-master connection
        conn.disconnect()
        inner.release(conn)
        return None

    def _book_out(self, inner: Any, conn: Any) -> bool:
        """Count ``conn`` as out of ``inner``; False if ``inner`` was retired meanwhile."""
        with self._state_lock:
            if getattr(inner, "_sentinel_retired", False):
                return False
            setattr(conn, _OWNER, weakref.ref(inner))  # weak: no conn<->pool cycle
            self._out[id(inner)] = self._out.get(id(inner), 0) + 1
            return True

    async def _master_connection(self, args: tuple, kwargs: dict) -> Any:
        fam = self._family
        last: Optional[BaseException] = None
        for _ in range(3):  # bounded: one re-resolution per failover step
            master = self._master
            if master is None:
                master = await self._master_address()
            inner = self._pool_for(master)
            try:
                conn = await self._io(self._hand_out, inner, args, kwargs)
            except fam.errors.PoolTimeoutError:
                raise  # the budget is full: not a topology problem
            except (fam.ConnectionError, fam.TimeoutError) as exc:
                # paused endpoint, failed connect, closed-by-rebind pool: did it move?
                last = exc
                try:
                    moved = await self._master_address() != master
                except fam.MasterNotFoundError:
                    moved = False
                if not moved:
                    raise
                continue
            if conn is not None:
                return conn
        raise last if last is not None else fam.MasterNotFoundError(
            f"No stable master found for {self.service_name!r}")

    async def _replica_addresses(self, refresh: bool = False) -> List[Address]:
        """Replica addresses, asked from Sentinel on first use and after a failure."""
        with self._state_lock:
            cached = list(self._replicas)
        if cached and not refresh:
            return cached
        try:
            replicas = await self._io(self.sentinel_manager.discover_slaves, self.service_name)
        except self._family.ConnectionError:
            replicas = []
        replicas = [(str(h), int(p)) for h, p in replicas]
        with self._state_lock:
            self._replicas = list(replicas)
        return replicas

    async def _replica_connection(self, args: tuple, kwargs: dict) -> Any:
        fam = self._family
        replicas = await self._replica_addresses()
        with self._state_lock:
            self._replica_rr += 1
            start = self._replica_rr
        order = [replicas[(start + i) % len(replicas)] for i in range(len(replicas))]
        last: Optional[BaseException] = None
        for address in order:
            try:
                conn = await self._io(self._hand_out, self._pool_for(address), args, kwargs)
            except fam.errors.PoolTimeoutError:
                raise
            except (fam.ConnectionError, fam.TimeoutError) as exc:
                last = exc
                await self._replica_addresses(refresh=True)
                continue
            if conn is not None:
                return conn
        try:  # fall back to the master, like redis-py
            master = await self._master_address()
            conn = await self._io(self._hand_out, self._pool_for(master), args, kwargs)
            if conn is not None:
                return conn
        except fam.MasterNotFoundError:
            pass
        raise fam.SlaveNotFoundError(f"No replica found for {self.service_name!r}") from last

    def release(self, connection: Any) -> None:  # type: ignore[override]
        inner, retired, close_inner = self._book_in(connection)
        if retired:
            connection.disconnect()  # a connection to a former master is never reused
        try:
            inner.release(connection)
        finally:
            if close_inner:
                inner.close()

    def _book_in(self, connection: Any) -> Tuple[Any, bool, bool]:
        """(inner pool, retired?, close it now?) for a connection coming back."""
        inner = _owner_of(connection)
        if inner is None:
            raise self._family.errors.ForeignConnectionError(f"{connection!r} was not handed out by {self!r}")
        with self._state_lock:
            retired = getattr(inner, "_sentinel_retired", False)
            left = self._out.get(id(inner), 0) - 1
            if left > 0:
                self._out[id(inner)] = left
            else:
                self._out.pop(id(inner), None)
            close_inner = retired and left <= 0
            if close_inner:
                self._retired.pop(id(inner), None)
        return inner, retired, close_inner

    def owns_connection(self, connection: Any) -> bool:
        inner = _owner_of(connection)
        return inner is not None and not getattr(inner, "_sentinel_retired", False) \
            and inner.owns_connection(connection)

    def make_connection(self) -> Any:
        address = self._master if self.is_master and self._master else self.get_master_address()
        return self._pool_for(address).make_connection()

    # -- lifecycle -------------------------------------------------------------
    def _all_inner(self) -> List[Any]:
        with self._state_lock:
            return list(self._inner.values()) + list(self._retired.values())

    def disconnect(self, inuse_connections: bool = True) -> None:
        for inner in self._all_inner():
            inner.disconnect(inuse_connections=inuse_connections)

    def reset(self) -> None:
        super().reset()
        for inner in self._all_inner() if hasattr(self, "_inner") else []:
            inner.reset()

    def close(self) -> None:
        with self._state_lock:
            self._closed = True
            pools = list(self._inner.values()) + list(self._retired.values())
            self._inner.clear()
            self._retired.clear()
            self._out.clear()
        for inner in pools:
            inner._sentinel_retired = True
            self._close_inner(inner)

    def set_retry(self, retry: Any) -> None:
        self.connection_kwargs.update({"retry": retry})
        for inner in self._all_inner():
            inner.set_retry(retry)

    def get_connection_count(self) -> Any:
        counts = [inner.get_connection_count() for inner in self._all_inner()]
        if all(isinstance(c, int) for c in counts):
            return sum(counts)
        return [item for c in counts for item in c]

    def stats(self) -> Dict[str, Any]:
        """Stats of the current master's (or first replica's) endpoint, plus ``address``."""
        with self._state_lock:
            address = self._master if self.is_master else next(iter(self._inner), None)
            inner = self._inner.get(address) if address else None
        if inner is None or address is None:
            return {"endpoint": None, "address": None, "state": None}
        out = dict(inner.stats())
        out["address"] = f"{address[0]}:{address[1]}"
        return out

    @property
    def endpoint(self) -> Optional[str]:
        with self._state_lock:
            inner = self._inner.get(self._master) if self._master else None
        return inner.endpoint if inner is not None else None

    def __repr__(self) -> str:
        role = "master" if self.is_master else "replica"
        return (f"<{type(self).__module__}.{type(self).__name__}"
                f"(service={self.service_name}({role}), address={self._master})>")


class SafeSentinelConnectionPool(SentinelConnectionPoolLogic, SentinelConnectionPool):
    """``SentinelConnectionPool`` behaviour on per-address ``SafeConnectionPool`` budgets.

    See ``SentinelConnectionPoolLogic``: the redis-py flavor of it."""

    _managed = SafeSentinelManagedConnection
    _managed_ssl = SafeSentinelManagedSSLConnection


class SentinelLogic(_SentinelBase):
    """``Sentinel`` whose ``master_for``/``slave_for`` build safe pools.

    Talking to the sentinels themselves is bounded: every sentinel gets a small
    ``SafeConnectionPool`` (``sentinel_max_connections``) without client-side
    retries; a sentinel that fails is skipped for a jittered, exponentially
    growing delay (``backoff_base`` .. ``backoff_cap`` seconds); concurrent
    lookups of one service are coalesced into one query; and while no sentinel
    names a healthy master, lookups fail fast with ``MasterNotFoundError`` for
    a jittered delay too. Nothing here loops or sleeps.
    """

    _family: SentinelFamily = REDIS_FAMILY
    _pool_class: type = SentinelConnectionPoolLogic  # the family's SafeSentinelConnectionPool

    def __init__(self, sentinels, min_other_sentinels: int = 0,
                 sentinel_kwargs: Optional[dict] = None, force_master_ip: Optional[str] = None,
                 *, backoff_base: float = 0.05, backoff_cap: float = 1.0,
                 sentinel_max_connections: int = 2, sentinel_timeout: float = 1.0,
                 master_cache_ttl: float = 0.1, **connection_kwargs: Any) -> None:
        # force_master_ip is kept here: not every library's Sentinel takes it
        super().__init__([], min_other_sentinels, sentinel_kwargs, **connection_kwargs)
        self._force_master_ip = force_master_ip
        self.sentinel_kwargs = dict(self.sentinel_kwargs)
        self.sentinel_kwargs.setdefault("socket_timeout", sentinel_timeout)
        self.sentinel_kwargs.setdefault("socket_connect_timeout", sentinel_timeout)
        self.sentinel_backoff = Backoff(backoff_base, backoff_cap)
        self.master_backoff = Backoff(backoff_base, backoff_cap)
        self._flights = SingleFlight()
        self.master_cache_ttl = master_cache_ttl
        # service -> (when the lookup that answered started, its answer; None
        # when it failed). Only a lookup that started later may replace it.
        self._known_masters: Dict[str, Tuple[float, Optional[Address]]] = {}
        self._sentinel_max = sentinel_max_connections
        self.sentinel_queries = 0  # queries sent to sentinels (observability, tests)
        self.sentinels = [self._sentinel_client(host, port) for host, port in sentinels]

    def _sentinel_client(self, host: str, port: int) -> Any:
        fam = self._family
        kwargs = dict(self.sentinel_kwargs)
        kwargs["retry"] = fam.retry(fam.no_backoff(), 0)
        kwargs.setdefault("max_connections", self._sentinel_max)
        kwargs.setdefault("timeout", self.sentinel_kwargs.get("socket_timeout") or 1.0)
        pool = fam.safe_pool()(host=host, port=int(port), **kwargs)
        return fam.client.from_pool(pool)

    @staticmethod
    def _name(sentinel: Any) -> str:
        kw = sentinel.connection_pool.connection_kwargs
        return f"{kw.get('host')}:{kw.get('port')}"

    _io = staticmethod(_call)  # how a flow calls the library (the asyncio logic awaits)

    async def _ask(self, sentinel: Any, fn: Callable[[Any], Any]) -> Any:
        key = self._name(sentinel)
        self.sentinel_queries += 1
        try:
            result = await self._io(fn, sentinel)
        except (self._family.ConnectionError, self._family.TimeoutError):
            self.sentinel_backoff.failed(key)
            raise
        self.sentinel_backoff.succeeded(key)
        return result

    def _ready_sentinels(self) -> List[Tuple[int, Any]]:
        return [(i, s) for i, s in enumerate(self.sentinels)
                if self.sentinel_backoff.ready(self._name(s))]

    def discover_master(self, service_name: str, fresh: bool = False) -> Address:
        """Like ``Sentinel.discover_master`` but coalesced, briefly cached
        (``master_cache_ttl`` seconds, unless ``fresh``) and backed off."""
        cached = self._cached_master(service_name, fresh)
        if cached is not None:
            return cached
        # A fresh lookup never joins one that may have started before it.
        return self._flights.do(("master", service_name, fresh),
                                lambda: run_sync(self._discover_master(service_name)),
                                lambda e: self._family.MasterNotFoundError(str(e)))

    def _cached_master(self, service_name: str, fresh: bool) -> Optional[Address]:
        known = self._known_masters.get(service_name)
        if not fresh and known is not None and known[1] is not None and \
                time.monotonic() - known[0] < self.master_cache_ttl:
            return known[1]
        return None

    def latest_master(self, service_name: str) -> Address:
        """The answer of the most recently started successful lookup."""
        return self.latest_master_since(service_name)[1]

    def latest_master_since(self, service_name: str) -> Tuple[float, Address]:
        """(when that lookup started, its answer)."""
        return run_sync(self._latest_master_since(service_name))

    async def _latest_master_since(self, service_name: str) -> Tuple[float, Address]:
        known = self._known_masters.get(service_name)
        if known is None or known[1] is None:
            await self._io(self.discover_master, service_name, True)
            known = self._known_masters.get(service_name)
        if known is None or known[1] is None:
            raise self._family.MasterNotFoundError(f"No master found for {service_name!r}")
        return known[0], known[1]

    async def _discover_master(self, service_name: str) -> Address:
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

    def _lookup_start(self, service_name: str) -> Tuple[float, List[Tuple[int, Any]], List[str]]:
        """(when the lookup started, the sentinels to ask, errors so far); raises
        ``MasterNotFoundError`` while the service backs off."""
        started = time.monotonic()
        wait = self.master_backoff.remaining(service_name)
        if wait > 0:
            raise self._family.MasterNotFoundError(
                f"No master found for {service_name!r} (backing off {wait:.3f}s)")
        ready = self._ready_sentinels()
        return started, ready, [] if ready else ["every sentinel is backing off"]

    def _lookup_answer(self, service_name: str, started: float, index: int, sentinel: Any,
                       masters: Dict[str, Any]) -> Optional[Address]:
        """The master named by one sentinel's ``SENTINEL MASTERS`` reply, or None."""
        state = masters.get(service_name)
        if not (state and self.check_master_state(state, service_name)):
            return None
        self.sentinels[0], self.sentinels[index] = sentinel, self.sentinels[0]
        self.master_backoff.succeeded(service_name)
        ip = self._force_master_ip if self._force_master_ip is not None else state["ip"]
        address = (str(ip), int(state["port"]))
        known = self._known_masters.get(service_name)
        if known is None or started >= known[0]:
            self._known_masters[service_name] = (started, address)
        return address

    def _lookup_failed(self, service_name: str, started: float, errors: List[str]) -> Exception:
        """No sentinel named a healthy master: the error to raise."""
        # Forget the answer, but not when: a slower lookup that started before
        # this one must not bring its older answer back (the old master).
        known = self._known_masters.get(service_name)
        if known is None or started >= known[0]:
            self._known_masters[service_name] = (started, None)
        self.master_backoff.failed(service_name)
        detail = f" : {', '.join(errors)}" if errors else ""
        return self._family.MasterNotFoundError(f"No master found for {service_name!r}{detail}")

    def discover_slaves(self, service_name: str) -> List[Address]:
        return run_sync(self._discover_slaves(service_name))

    async def _discover_slaves(self, service_name: str) -> List[Address]:
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

    def master_for(self, service_name: str, redis_class: Any = None,
                   connection_pool_class: Any = None, **kwargs: Any) -> Any:
        return super().master_for(service_name, redis_class=redis_class or self._family.client,
                                  connection_pool_class=connection_pool_class or self._pool_class,
                                  **kwargs)

    def slave_for(self, service_name: str, redis_class: Any = None,
                  connection_pool_class: Any = None, **kwargs: Any) -> Any:
        return super().slave_for(service_name, redis_class=redis_class or self._family.client,
                                 connection_pool_class=connection_pool_class or self._pool_class,
                                 **kwargs)

    def replica_for(self, service_name: str, redis_class: Any = None,
                    connection_pool_class: Any = None, **kwargs: Any) -> Any:
        return self.slave_for(service_name, redis_class, connection_pool_class, **kwargs)

    def close(self) -> None:
        for sentinel in self.sentinels:
            try:
                sentinel.close()
            finally:
                sentinel.connection_pool.close()


class SafeSentinel(SentinelLogic, Sentinel):
    """``redis.sentinel.Sentinel`` whose ``master_for``/``slave_for`` build safe pools.

    See ``SentinelLogic``: the redis-py flavor of it."""

    _pool_class = SafeSentinelConnectionPool
