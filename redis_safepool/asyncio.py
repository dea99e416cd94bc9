"""asyncio SafeConnectionPool: redis.asyncio's pool interface over the same process-wide budgets."""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import os
import time
import weakref
from typing import Any, Dict, Optional, Tuple

from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.connection import ConnectionPool as AsyncConnectionPool

from . import _core, _otel, _release_events
from ._books import CoreBooks
from ._compat import should_reconnect
from ._keys import FlavorRef, flavor_ref
from .exceptions import PoolTimeoutError, SafePoolError

__all__ = ["SafeConnectionPool", "BlockingSafeConnectionPool"]


class _LoopWaker:
    """One pipe per event loop: the C core writes a byte when it serves one of its waiters.

    It holds its loop weakly; the pipe is closed when the loop is closed or
    collected, and the pools that served the loop drop its flavor then, so
    the loop's idle connections are closed too.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.token = next(_tokens)
        self._loop = weakref.ref(loop)
        self.read_fd, self.write_fd = os.pipe()
        for fd in (self.read_fd, self.write_fd):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
            os.set_inheritable(fd, False)
        # (pool id, ticket) -> (pool, future)
        self.pending: Dict[Tuple[int, int], Tuple["SafeConnectionPool", asyncio.Future]] = {}
        self.pools: "weakref.WeakSet[SafeConnectionPool]" = weakref.WeakSet()
        loop.add_reader(self.read_fd, self._on_readable)
        self._fds = weakref.finalize(loop, _close_fds, self.read_fd, self.write_fd)

    @property
    def alive(self) -> bool:
        loop = self._loop()
        return loop is not None and not loop.is_closed()

    def _on_readable(self) -> None:
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        self.collect()

    def collect(self) -> None:
        pools = {id(pool): pool for pool, _ in self.pending.values()}
        for pool in pools.values():
            for ticket, kind, conn in pool._async_ready():
                entry = self.pending.pop((id(pool), ticket), None)
                if entry is None:
                    continue
                fut = entry[1]
                if fut.done():
                    # Expired or cancelled just now: hand it straight back.
                    pool._give_back(kind, conn)
                else:
                    fut.set_result((kind, conn))

    def retire(self) -> None:
        """The loop is closed or gone: drop its flavors and close the pipe."""
        for pool in list(self.pools):
            pool._forget_loop(self.token)
        loop = self._loop()
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self.read_fd)
        self._fds()  # closes the pipe once


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


_tokens = itertools.count(1)
_wakers: Dict[int, _LoopWaker] = {}
_waker_of: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int]" = weakref.WeakKeyDictionary()
_waker_pid = os.getpid()


def _waker(loop: asyncio.AbstractEventLoop) -> _LoopWaker:
    global _waker_pid
    if _waker_pid != os.getpid():  # a forked child has its own loops
        _wakers.clear()
        _waker_of.clear()
        _waker_pid = os.getpid()
    token = _waker_of.get(loop)
    if token is not None and token in _wakers:
        return _wakers[token]
    # A new loop: retire the wakers of loops that are closed or gone.
    for old in [w for w in _wakers.values() if not w.alive]:
        del _wakers[old.token]
        old.retire()
    waker = _LoopWaker(loop)
    _wakers[waker.token] = waker
    _waker_of[loop] = waker.token
    return waker


class AsyncPoolMethods(CoreBooks):
    """The asyncio pool over the C core, for any client family (redis-py, valkey-py).

    A family's pool class puts this first (its ``get_connection``/``release``
    replace the core's sync ones), then ``_core.PoolCore``, then the client's
    own asyncio ``ConnectionPool`` (also named by ``_client_pool``).
    """

    __slots__ = ()

    _client = ("redis", "asyncio")

    def __init__(
        self,
        connection_class: type = Connection,
        max_connections: Optional[int] = None,
        timeout: Optional[float] = 20.0,
        **connection_kwargs: Any,
    ) -> None:
        max_connections = self._take_limits(connection_class, max_connections, timeout)
        self._client_pool.__init__(
            self, connection_class=connection_class, max_connections=max_connections,
            **connection_kwargs,
        )
        self.reset()

    def reset(self) -> None:
        if not hasattr(self, "_max_explicit"):
            return  # redis-py's __init__ calls this before we are set up
        self._bind_budget()
        self._loop_flavors: Dict[int, FlavorRef] = {}  # loop token -> flavor (rebinding dropped them)
        self._reauth_pending = False  # a token rotation: connections may carry a token
        _otel.bind(self)

    def __del__(self) -> None:
        pass

    # -- checkout -----------------------------------------------------------------

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any):
        """Check out a connected connection, waiting (FIFO, without blocking the loop)."""
        started = time.monotonic() if self._otel_on else 0.0
        loop = asyncio.get_running_loop()
        try:
            waker = _waker(loop)
        except OSError as exc:  # out of file descriptors for the loop's pipe
            raise SafePoolError(f"cannot wait for a connection to {self.endpoint}: {exc}") from exc
        flavor = self._loop_flavor(waker)
        kind, obj = self._async_acquire(waker.write_fd, flavor)
        if kind == "wait":
            kind, obj = await self._wait_turn(loop, waker, obj)
        if kind == "slot":
            made = time.monotonic() if self._otel_on else 0.0
            conn = await self._fill_slot(flavor)
            if self._otel_on:
                now = time.monotonic()
                _otel.on_event(self, _otel.CHECKOUT_NEW, now - started, now - made)
            return conn
        try:
            await self.ensure_connection(obj)
            if self._reauth_pending and getattr(obj, "_re_auth_token", None) is not None:
                await obj.re_auth()  # an idle connection when the token rotated
        except BaseException as exc:
            self._discard(obj)
            self._report_exception(exc)  # as a failed connect is; masks the password in it
            raise
        if self._otel_on:
            _otel.on_event(self, _otel.CHECKOUT, time.monotonic() - started, 0.0)
        return obj

    async def _wait_turn(self, loop: asyncio.AbstractEventLoop, waker: _LoopWaker,
                         ticket: int) -> Tuple[str, Any]:
        fut = loop.create_future()
        waker.pending[(id(self), ticket)] = (self, fut)
        waker.collect()  # it may have been served already
        timer = None
        if self.timeout is not None and not fut.done():
            timer = loop.call_later(self.timeout, _expire, fut)
        started = loop.time()
        try:
            kind, obj = await fut
        except _Expired:
            waker.pending.pop((id(self), ticket), None)
            if self._async_cancel(ticket, True):
                if self._otel_on:
                    _otel.on_event(self, _otel.TIMEOUT, loop.time() - started, 0.0)
                raise self._timeout_error(loop.time() - started) from None
            raise  # pragma: no cover - collected concurrently; handled in collect()
        except BaseException:  # cancelled: leave the queue, give back what came
            waker.pending.pop((id(self), ticket), None)
            if not self._async_cancel(ticket, False) and fut.done() and not fut.cancelled():
                self._give_back(*fut.result())
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if kind == "paused":
            self._raise_unavailable()
        if kind == "closed":
            self._raise_closed()
        return kind, obj

    def _loop_flavor(self, waker: _LoopWaker) -> int:
        """The flavor of this pool's connections on the waker's loop."""
        ref = self._loop_flavors.get(waker.token)
        if ref is None:
            kwargs = dict(self.connection_kwargs, __event_loop__=waker.token)
            ref = flavor_ref(self.connection_class, kwargs)
            self._use_flavor(ref.id)
            self._loop_flavors[waker.token] = ref
            waker.pools.add(self)
        return ref.id

    def _forget_loop(self, token: int) -> None:
        ref = self._loop_flavors.pop(token, None)
        if ref is not None:
            self._drop_flavor(ref.id)

    async def _fill_slot(self, flavor: int) -> AbstractConnection:
        try:
            conn = self.make_connection()
            # redis-py's own entry point, so wrappers and instrumentation see new connections
            await self.ensure_connection(conn)
        except BaseException as exc:
            self._slot_failed(exc)
            raise
        self._add(conn, _fd_of(conn), flavor)
        return conn

    def _give_back(self, kind: str, conn: Any) -> None:
        if kind == "conn":
            self._release_fd(conn, _fd_of(conn))
        elif kind == "slot":
            self._slot_failed(None)

    def _timeout_error(self, waited: float) -> PoolTimeoutError:
        st = self.stats()
        return self._errors.PoolTimeoutError(
            f"Timed out after {waited:.3f}s waiting for a connection to {st['endpoint']} "
            f"(max_connections={st['max_connections']}, in use={st['in_use']}, "
            f"waiters={st['waiters']})"
        )

    # -- release --------------------------------------------------------------------

    async def release(self, connection: AbstractConnection) -> None:  # type: ignore[override]
        if should_reconnect(connection):
            await connection.disconnect()
        if _release_events.needs_async_event(self, connection) and self.owns_connection(connection):
            # Dispatched while the connection is still ours: its re-authentication
            # listener sends AUTH on it. A failed listener leaves it in an unknown
            # state: it goes back disconnected and the error propagates.
            try:
                await self._event_dispatcher.dispatch_async(_release_events.async_event(connection))
            except BaseException:
                try:
                    await connection.disconnect(nowait=True)
                except BaseException:
                    pass
                self._release_fd(connection, -1)
                raise
        self._release_fd(connection, _fd_of(connection))

    async def re_auth_callback(self, token: Any) -> None:
        """A streaming credential provider's new token: re-authenticate every connection."""
        await _release_events.re_auth_async(self, token)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        conns = self._idle_list()
        self._drain_idle()
        if inuse_connections:
            conns += self._in_use_list()
        results = await asyncio.gather(*(c.disconnect() for c in conns), return_exceptions=True)
        _otel.settle(self)
        exc = next((r for r in results if isinstance(r, BaseException)), None)
        if exc:
            raise exc

    async def aclose(self) -> None:
        self._close_core()
        await self.disconnect()

    async def __aenter__(self) -> "SafeConnectionPool":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def can_get_connection(self) -> bool:
        st = self.stats()
        return st["state"] != "paused" and (st["idle"] > 0 or st["total"] < st["max_connections"])

    def make_connection(self) -> AbstractConnection:
        return self.connection_class(**self.connection_kwargs)


class SafeConnectionPool(AsyncPoolMethods, _core.PoolCore, AsyncConnectionPool):
    """A drop-in ``redis.asyncio.ConnectionPool`` / ``BlockingConnectionPool``.

    Shares the process-wide per-endpoint budget with the sync pools: threads
    and coroutines for one server together never hold more than its
    ``max_connections``. Waiting never blocks the event loop; it is FIFO
    with the threads, honours ``timeout`` and is cancellation-safe.
    """

    _client_pool = AsyncConnectionPool


BlockingSafeConnectionPool = SafeConnectionPool


def _fd_of(conn: AbstractConnection) -> int:
    """asyncio sockets belong to their transport, so the core must never poll
    or shut them down: -3 marks "connected, not pollable", -1 "not connected".
    Readiness is checked at checkout with redis-py's own can_read()."""
    return -3 if getattr(conn, "is_connected", False) else -1  # foreign objects: the core rejects


class _Expired(Exception):
    """Internal: a waiter's deadline passed."""


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(_Expired())
