"""asyncio SafeConnectionPool: redis.asyncio's pool interface over the same process-wide budgets."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
import weakref
from typing import TYPE_CHECKING, Any, ClassVar, Dict, Optional, Tuple

from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.connection import ConnectionPool as AsyncConnectionPool

from . import _core, _leaks, _otel, _release_events, observe
from ._pool_base import DEFAULT_TIMEOUT, PoolBase
from ._compat import should_reconnect
from ._deadlines import DeadlineLine
from ._endpoint_keys import FlavorRef, endpoint_of, flavor_ref
from .exceptions import SafePoolError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["SafeConnectionPool", "BlockingSafeConnectionPool"]


class _LoopWaker:
    """One inbox per event loop: the C core appends the loop's served waiters to it
    and writes a byte to its pipe only when the loop has no wake-up on the way.

    It holds its loop weakly; the pipe is closed when the loop is closed or
    collected, and the pools that served the loop drop its flavor then, so
    the loop's idle connections are closed too.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.token = next(_tokens)
        self._loop = weakref.ref(loop)
        self.inbox = _core.LoopInbox()
        self.pools: "weakref.WeakSet[AsyncPoolMethods]" = weakref.WeakSet()
        loop.add_reader(self.inbox.fileno(), self.collect)

    @property
    def alive(self) -> bool:
        loop = self._loop()
        return loop is not None and not loop.is_closed()

    def collect(self) -> None:
        """Resolve the futures of this loop's served waiters (the pipe's reader)."""
        _resolve(self.inbox.collect())

    def release_here(self, pool: "AsyncPoolMethods", conn: Any, fd: int) -> None:
        """A release by a task of this loop: the waiters of this loop it serves
        get their futures resolved now, with no wake-up through the pipe (which
        would cost a write, a read and a loop iteration per hand-over)."""
        inbox = self.inbox
        if inbox is None:  # retired meanwhile
            pool._release_fd(conn, fd)
            return
        inbox.hold()
        try:
            pool._release_fd(conn, fd)
        finally:
            served = inbox.take()
            if served is not None:
                _resolve(served)

    def retire(self) -> None:
        """The loop is closed or gone: give back what its waiters hold, drop its flavors."""
        for pool in list(self.pools):
            pool._async_forget_inbox(self.inbox)
        for pool, _fut, kind, conn in self.inbox.collect():
            if pool is not None:
                pool._give_back(kind, conn)
        for pool in list(self.pools):
            pool._forget_loop(self.token)
        loop = self._loop()
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self.inbox.fileno())
        self.inbox = None  # type: ignore[assignment]  # the pipe closes with the last reference


def _resolve(served: Any) -> None:
    for pool, fut, kind, conn in served:
        if not fut.done():
            fut.set_result((kind, conn))
        elif pool is not None:  # cancelled or timed out just now: hand it straight back
            pool._give_back(kind, conn)


_tokens = itertools.count(1)
_wakers: Dict[int, _LoopWaker] = {}
_waker_of: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int]" = weakref.WeakKeyDictionary()
_last_waker: Optional[_LoopWaker] = None  # of the loop of the last checkout: most ask for it again


def _forget_wakers() -> None:
    """In a forked child: its loops are its own, so are their pipes."""
    global _last_waker
    _wakers.clear()
    _waker_of.clear()
    _last_waker = None


os.register_at_fork(after_in_child=_forget_wakers)


def _waker_here() -> Optional[_LoopWaker]:
    """The running loop's waker if it has one (it has once it checked out)."""
    loop = asyncio.get_running_loop()
    last = _last_waker
    if last is not None and last._loop() is loop:
        return last
    token = _waker_of.get(loop)
    return None if token is None else _wakers.get(token)


def _waker(loop: asyncio.AbstractEventLoop) -> _LoopWaker:
    global _last_waker
    last = _last_waker
    if last is not None and last._loop() is loop:
        return last
    token = _waker_of.get(loop)
    if token is not None and token in _wakers:
        _last_waker = _wakers[token]
        return _last_waker
    # A new loop: retire the wakers of loops that are closed or gone.
    for old in [w for w in _wakers.values() if not w.alive]:
        del _wakers[old.token]
        old.retire()
    waker = _LoopWaker(loop)
    _wakers[waker.token] = waker
    _waker_of[loop] = waker.token
    _last_waker = waker
    return waker


class AsyncPoolMethods(PoolBase):
    """The asyncio pool over the C core, for any client family (redis-py, valkey-py).

    A family's pool class puts this first (its ``get_connection``/``release``
    replace the core's sync ones), then ``_core.PoolCore``, then the client's
    own asyncio ``ConnectionPool`` (also named by ``_client_pool``).
    """

    __slots__ = ()

    _client = ("redis", "asyncio")
    _quiet_async: Any = None  # the release listeners last seen: see _release_events.async_event_due

    # from the client family's asyncio ConnectionPool, the last base
    _client_pool: ClassVar[Any]
    _event_dispatcher: Any

    async def ensure_connection(self, connection: Any) -> None:
        """Connect a connection if it is not; reconnect it if anything on it is unread.

        Connected with nothing unread, it is ready. Anything unread (a reply nobody
        read, a push) makes it reconnect, as the sync pool's readiness check does:
        redis-py 8's own check lets such a connection through whenever maintenance
        notifications are "auto", its default, and the next command would read the
        stale reply as its own. The rest is the client's own check (redis-py 8's
        ``connect()`` runs its retry wrapper even to find a connection connected).
        """
        if getattr(connection, "is_connected", False):
            if _unread_in_stream(connection):
                dirty = True
            else:
                check = getattr(connection, "can_read", None) or connection.can_read_destructive
                try:
                    dirty = await check()
                except Exception:  # a parser that cannot tell: reconnect, which can
                    dirty = True
            if not dirty:
                return
            await connection.disconnect()
        await super().ensure_connection(connection)  # type: ignore[misc]

    def __init__(
        self,
        connection_class: type = Connection,
        max_connections: Optional[int] = None,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        max_idle_time: Optional[float] = None,
        max_lifetime: Optional[float] = None,
        leak_threshold: Optional[float] = None,
        scope: Optional[str] = None,
        **connection_kwargs: Any,
    ) -> None:
        max_connections = self._take_limits(connection_class, max_connections, timeout, scope)
        self._take_lifetimes(max_idle_time, max_lifetime, leak_threshold)
        self._client_pool.__init__(
            self, connection_class=connection_class, max_connections=max_connections,
            **connection_kwargs,
        )
        self.reset()
        observe.note_pool_created(self)

    def reset(self) -> None:
        """Forget the idle connections; (re)attach to the budget if the server changed.

        Connections checked out before a reset stay valid and are taken back
        by ``release()``, whichever loop or thread resets.
        """
        if not hasattr(self, "_max_explicit"):
            return  # redis-py's __init__ calls this before we are set up
        self._reauth_pending = False  # a token rotation: connections may carry a token
        key = endpoint_of(self.connection_class, self.connection_kwargs)[0]
        if getattr(self, "_bound_key", None) != key:
            self._bind_budget()
            self._bound_key = key
            self._loop_flavors: Dict[int, FlavorRef] = {}  # loop token -> flavor (rebinding dropped them)
            self._apply_idle_limits()
            # (loop token, timeout) -> that loop's waiters' deadlines; only the loop's thread
            # touches its own lines. Kept across resets: waiters may be queued.
            self._deadline_lines: Dict[Tuple[int, float], DeadlineLine] = {}
        else:
            # Same server: keep the binding (and so the connections out now); settings may
            # have changed, so every loop gets its flavor anew at its next checkout.
            flavors, self._loop_flavors = self._loop_flavors, {}
            for ref in flavors.values():
                self._drop_flavor(ref.id)
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
        fut = loop.create_future()
        kind, obj = self._async_acquire(waker.inbox, flavor, fut)
        if kind == "wait":
            kind, obj = await self._wait_turn(waker, fut)
        if kind == "slot":
            made = time.monotonic() if self._otel_on else 0.0
            conn = await self._fill_slot(flavor)
            if _leaks._leak_on:
                _leaks.note_checkout(self, conn)
            if self._otel_on:
                now = time.monotonic()
                _otel.on_event(self, _otel.CHECKOUT_NEW, now - started, now - made)
            return conn
        setattr(obj, "_safepool_readying", True)  # disconnect() must not close it under us
        try:
            if obj._writer is None:
                # It came back disconnected: redis-py's disconnect(nowait=True) (a
                # cancelled command) leaves the socket to a close callback this loop
                # has already scheduled. Let it run before connecting again, or the
                # server briefly sees this slot twice.
                await _closes_done()
            await self.ensure_connection(obj)
            if self._reauth_pending and getattr(obj, "_re_auth_token", None) is not None:
                await obj.re_auth()  # an idle connection when the token rotated
        except BaseException as exc:
            try:
                await _close_half_made(obj)
            finally:
                self._bury(obj)
                self._report_exception(exc)  # as a failed connect is; masks the password in it
            raise
        finally:
            setattr(obj, "_safepool_readying", False)
        self._hold_weakly(obj, _tracker_of(obj))
        if _leaks._leak_on:
            _leaks.note_checkout(self, obj)
        if self._otel_on:
            _otel.on_event(self, _otel.CHECKOUT, time.monotonic() - started, 0.0)
        return obj

    async def _wait_turn(self, waker: _LoopWaker, fut: asyncio.Future) -> Tuple[str, Any]:
        line = None
        if self.timeout is not None:
            line = self._deadline_line(waker.token, self.timeout)
            line.add(fut)
        try:
            kind, obj = await fut
        except BaseException:
            # Cancelled, or timed out (_expire set our PoolTimeoutError and left the
            # queue): leave the queue if still in it, give back what came meanwhile.
            if (not self._async_cancel(fut, False) and fut.done() and not fut.cancelled()
                    and fut.exception() is None):
                self._give_back(*fut.result())
            raise
        finally:
            if line is not None:
                line.settled()
        if kind == "paused":
            self._raise_unavailable()
        if kind == "closed":
            self._raise_closed()
        return kind, obj

    def _deadline_line(self, token: int, timeout: float) -> DeadlineLine:
        """The line of this pool's waiters on the loop of ``token`` that wait ``timeout``."""
        key = (token, timeout)
        line = self._deadline_lines.get(key)
        if line is None:
            line = self._deadline_lines[key] = DeadlineLine(timeout, self._expire)
        return line

    def _expire(self, fut: asyncio.Future, started: float) -> None:
        """The waiter's deadline passed: leave the queue and fail with a pool timeout."""
        if fut.done():
            return
        self._async_cancel(fut, True)  # False: detached by an unbind; it holds nothing
        waited = fut.get_loop().time() - started
        if self._otel_on:
            _otel.on_event(self, _otel.TIMEOUT, waited, 0.0)
        fut.set_exception(self._timeout_error(waited))

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
        for key in [k for k in self._deadline_lines if k[0] == token]:
            self._deadline_lines.pop(key).close()
        ref = self._loop_flavors.pop(token, None)
        if ref is not None:
            self._drop_flavor(ref.id)

    async def _fill_slot(self, flavor: int) -> AbstractConnection:
        conn = None
        try:
            conn = self.make_connection()
            # redis-py's own entry point, so wrappers and instrumentation see new connections
            await self.ensure_connection(conn)
        except BaseException as exc:
            try:
                if conn is not None:
                    await _close_half_made(conn)
            finally:
                self._slot_failed(exc, flavor)
            raise
        self._add(conn, _fd_of(conn), flavor)
        self._hold_weakly(conn, _tracker_of(conn))
        return conn

    def _give_back(self, kind: str, conn: Any) -> None:
        if kind == "conn":
            self._release_fd(conn, _fd_of(conn))
        elif kind == "slot":
            self._slot_failed(None)

    # -- release --------------------------------------------------------------------

    async def release(self, connection: AbstractConnection) -> None:  # type: ignore[override]
        if _leaks._leak_on:
            _leaks.note_release(self, connection)
        # (the core's _release_fd scrubs the credentials in an exception in flight: a
        # release in the `finally` of a failed command)
        if should_reconnect(connection):
            await connection.disconnect()
        if getattr(connection, "_writer", None) is None:
            # disconnect(nowait=True) (a cancelled or failed command) leaves the socket
            # to a close callback of its loop, and another loop may take the slot before
            # that callback runs. Shut down the socket we handed out, and let this loop's
            # pending closes run: redis-py may have reconnected inside the command, and
            # that newer socket is known only to its callback.
            _shut_down_writer(_last_writer(connection))
            try:
                await _closes_done()
            except BaseException:
                self._release_fd(connection, -1)  # cancelled again: give the slot back anyway
                raise
        if _release_events.async_event_due(self, connection) and self.owns_connection(connection):
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
        waker = _waker_here()
        if waker is None:
            self._release_fd(connection, _fd_of(connection))
        else:
            waker.release_here(self, connection, _fd_of(connection))

    async def re_auth_callback(self, token: Any) -> None:
        """A streaming credential provider's new token: re-authenticate every connection."""
        await _release_events.re_auth_async(self, token)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        running = asyncio.get_running_loop()
        # not connected (None): nothing to close, and it may be connecting on another loop
        here = [c for c in self._idle_list() if _loop_of(c) is running]
        self._bury_idle()  # the core disposes of them, each on its own loop
        if inuse_connections:
            for conn in self._in_use_list():
                if _loop_of(conn) is running and not getattr(conn, "_safepool_readying", False):
                    here.append(conn)
                else:
                    # Another loop's transport, or being made ready by get_connection() in
                    # another task: closing it under that task leaves redis-py writing to a
                    # None writer (an AttributeError, outside redis' hierarchy). Shut the
                    # socket down instead: the command fails with a ConnectionError, and
                    # the connection reconnects at its next checkout.
                    _shut_down(conn)
        results = await asyncio.gather(*(c.disconnect() for c in here), return_exceptions=True)
        _otel.settle(self)
        exc = next((r for r in results if isinstance(r, BaseException)), None)
        if exc:
            raise exc

    async def aclose(self) -> None:
        self._close_core()
        await self.disconnect()

    async def __aenter__(self) -> Self:
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

    ``max_idle_time``, ``max_lifetime`` and ``leak_threshold`` work as for
    the sync pool: idle connections past a limit are closed on their own
    loop, and a connection held too long (or dropped without release) is
    reported with the stack that checked it out.
    """

    _client_pool = AsyncConnectionPool


BlockingSafeConnectionPool = SafeConnectionPool


def _unread_in_stream(conn: Any) -> bool:
    """Bytes the transport has read that no parser has taken yet, or the server's EOF.

    redis-py before 8 asks only the parser's own buffer and the EOF, so a reply
    still in the StreamReader (where the Python parser leaves it until asked)
    would pass for a clean connection. asyncio has no public way to ask without
    reading; redis-py 8 looks at the same private buffer.
    """
    reader = getattr(conn, "_reader", None)
    if reader is None:
        return False
    try:
        return bool(reader._buffer) or reader.at_eof()
    except AttributeError:  # a reader of another kind: the client's check decides
        return False


def _loop_of(conn: AbstractConnection) -> Optional[asyncio.AbstractEventLoop]:
    """The event loop whose transport the connection uses (None when not connected)."""
    writer = conn._writer
    return None if writer is None else getattr(writer, "_loop", None)


async def _closes_done() -> None:
    """Yield once: close callbacks this loop has already scheduled run before we go on
    (the loop runs its ready callbacks in order)."""
    await asyncio.sleep(0)


async def _close_half_made(conn: AbstractConnection) -> None:
    """A connect or reconnect failed or was cancelled; its slot is about to go back.

    Close its socket first, or another loop may use the slot while the server
    still has this one: redis-py leaves the socket open when cancelled after
    it opened, and asyncio closes a transport cancelled while being made in a
    callback of the next iteration.
    """
    if conn._writer is not None:
        _shut_down_writer(conn._writer)
        conn._close()
    else:
        _shut_down_writer(_last_writer(conn))
        await _closes_done()


class _SocketTracker:
    """The transport a connection last connected with, kept current by redis-py's
    connect callbacks (reconnects inside a command included).

    A checkout is held weakly by the core; if the caller drops it unreleased,
    calling it closes the socket, which the transport would otherwise keep
    open after the connection object is gone. It never refers to the connection.
    """

    __slots__ = ("writer", "_callbacks", "__weakref__")

    def __init__(self) -> None:
        self.writer: Any = None
        self._callbacks: Any = None  # the connection's callback list we are in

    def track(self, conn: AbstractConnection) -> None:
        self.writer = conn._writer
        callbacks = getattr(conn, "_connect_callbacks", None)
        if callbacks is None or callbacks is not self._callbacks:
            # PubSub's reset clears the list: join it again
            conn.register_connect_callback(self._connected)
            self._callbacks = getattr(conn, "_connect_callbacks", None)

    def _connected(self, conn: AbstractConnection) -> None:
        self.writer = conn._writer

    def __call__(self) -> None:
        """The connection was dropped unreleased: close its socket, from any thread."""
        writer = self.writer
        self.writer = None
        _shut_down_writer(writer)
        loop = getattr(writer, "_loop", None)
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(writer.transport.close)
            except RuntimeError:
                pass  # the loop closed meanwhile; the shutdown above closed the server side


def _tracker_of(conn: AbstractConnection) -> _SocketTracker:
    """The connection's tracker, following it again if PubSub's reset dropped our callback."""
    tracker = getattr(conn, "_safepool_socket", None)
    if tracker is None:
        tracker = _SocketTracker()
        setattr(conn, "_safepool_socket", tracker)
        tracker.track(conn)
    elif getattr(conn, "_connect_callbacks", None) is not tracker._callbacks:
        tracker.track(conn)
    else:
        tracker.writer = conn._writer
    return tracker


def _last_writer(conn: AbstractConnection) -> Any:
    tracker = getattr(conn, "_safepool_socket", None)
    return None if tracker is None else tracker.writer


def _shut_down(conn: AbstractConnection) -> None:
    _shut_down_writer(conn._writer)


def _shut_down_writer(writer: Any) -> None:
    """Shut a transport's socket down now, from any thread (the server sees it go)."""
    sock = None if writer is None else writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _fd_of(conn: AbstractConnection) -> int:
    """asyncio sockets belong to their transport, so the core must never poll
    or shut them down: FD_UNPOLLABLE marks "connected, not pollable", -1 "not
    connected" (foreign objects: the core rejects them).
    Readiness is checked at checkout with redis-py's own can_read()."""
    return _core.FD_UNPOLLABLE if getattr(conn, "is_connected", False) else -1
