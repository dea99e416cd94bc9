"""SafeConnectionPool: redis-py's ConnectionPool interface over the C core's per-endpoint budget."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from redis.connection import AbstractConnection, Connection, ConnectionPool

from . import _core, _otel, _release_events, _tls_probe, observe
from ._pool_base import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT, PoolBase

__all__ = ["SafeConnectionPool", "DEFAULT_MAX_CONNECTIONS", "DEFAULT_TIMEOUT"]

from ._compat import CacheProxyConnection


def _socket_of(conn: Any) -> Any:
    """The socket of a connection that may not keep it in ``_sock``: through
    redis-py's ConnectionInterface (``_get_socket()``, e.g. CacheProxyConnection)."""
    get_socket = getattr(conn, "_get_socket", None)
    if get_socket is not None:
        try:
            return get_socket()
        except NotImplementedError:  # a proxy around a connection without the interface
            pass
    sock = getattr(conn, "_sock", None)
    if sock is None:  # redis-py's caching proxy before _get_socket() existed
        sock = getattr(getattr(conn, "_conn", None), "_sock", None)
    return sock


def _unwatch(connection: Any) -> None:
    """Takes a connection's socket out of the checker's watch before we close it.

    Another thread may have a command in flight on it: the reply that arrives
    after our shutdown() makes the kernel reset the socket, and the watch
    would take that reset for the server hanging up on us.
    """
    sock = _socket_of(connection)
    try:
        fd = sock.fileno() if sock is not None else -1
    except (OSError, ValueError):
        return
    if fd >= 0:
        _core.unwatch(fd)


def _shut_down(connection: Any) -> None:
    """Shuts a connection's socket down for both directions, from any thread.

    The holder still has the socket object: its next read or write fails
    (EOF, EPIPE) instead of touching a closed fd number that a new socket
    may already reuse. The socket's own ``shutdown()`` is bypassed for TLS,
    whose version drops the TLS state under the holder.
    """
    sock = _socket_of(connection)
    if isinstance(sock, socket.socket):
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass  # closed meanwhile by its holder


def _track_leaks(pool: SyncPoolMethods) -> None:
    """Route this pool's checkouts through the leak detector (costs a Python call each)."""
    core_get, core_release = pool.get_connection, pool.release

    def get_connection(*args: Any, **kwargs: Any) -> Connection:
        conn = core_get(*args, **kwargs)
        observe.note_checkout(pool, conn)
        return conn

    def release(connection: Connection) -> None:
        observe.note_release(pool, connection)
        core_release(connection)

    # the instance's own attributes shadow the core's methods
    setattr(pool, "get_connection", get_connection)
    setattr(pool, "release", release)


if TYPE_CHECKING:
    class _ClientPoolAPI(PoolBase):
        """What the client family's ConnectionPool, the last base of every sync pool,
        gives SyncPoolMethods (only for the type checker: at runtime this is PoolBase)."""

        _client_pool: ClassVar[Any]
        cache: Any
        _lock: Any
        pid: int

        def get_protocol(self) -> Any: ...
        def _should_update_connection(self, conn: Any, matching_pattern: str = ...,
                                      matching_address: Optional[str] = ...,
                                      matching_notification_hash: Optional[int] = ...) -> bool: ...
        def _update_maint_notifications_configs_for_connections(self, *args: Any,
                                                                **kwargs: Any) -> None: ...
else:
    _ClientPoolAPI = PoolBase


class SyncPoolMethods(_ClientPoolAPI):
    """The sync pool over the C core, for any client family (redis-py, valkey-py).

    A family's pool class puts ``_core.PoolCore`` first, this next, then the
    client's own ``ConnectionPool`` (also named by ``_client_pool``); its
    ``_errors`` namespace names the exception classes the core raises.
    """

    __slots__ = ()

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
            self,
            connection_class=connection_class,
            max_connections=max_connections,
            **connection_kwargs,
        )
        observe.note_pool_created(self)
        if self.leak_threshold or observe.leak_tracking():
            _track_leaks(self)

    # -- binding ------------------------------------------------------------

    def reset(self) -> None:
        """(Re)attach to the endpoint budget for the current connection kwargs.

        redis-py calls this from ``__init__``; django-redis calls it after
        changing ``connection_kwargs`` (e.g. a password), which may change
        the flavor of connections this pool hands out. Safe while other
        threads use the pool: connections checked out before it stay valid
        and are taken back by ``release()`` (closed if their settings are
        no longer this pool's), and the budget holds throughout.
        """
        if self._bind_budget().get("tls"):
            _tls_probe.watch(self)  # the C checker cannot speak TLS
        self._apply_idle_limits()
        # Only RESP3 maintenance notifications mark connections for reconnect;
        # redis-py reports "auto" (truthy) for RESP2 too, which would cost a
        # Python call on every release for nothing.
        maint = getattr(self, "maint_notifications_enabled", None)
        self._check_reconnect = bool(maint and maint()) and self.get_protocol() in (3, "3")
        cache = getattr(self, "cache", None)
        plain = issubclass(self.connection_class, AbstractConnection) and cache is None
        # With client-side caching an idle socket holds invalidation pushes that the
        # proxy reads before its next command: only a closed socket is not ready.
        self._set_hooks(socket_getter=None if plain else _socket_of,
                        pushes_ok=cache is not None)
        _release_events.bind(self)
        _otel.bind(self)
        self.pid = os.getpid()

    def _checkpid(self) -> None:
        # Fork is handled in C (pthread_atfork + an epoch check on every call).
        pass

    def __del__(self) -> None:
        # The C part drops this pool's books when it is freed.
        pass

    # -- connections ----------------------------------------------------------

    def make_connection(self) -> Any:  # a connection of the pool's client family
        """Create a new connection object (not connected yet) within the budget."""
        kwargs = dict(self.connection_kwargs)
        if getattr(self, "cache", None) is not None and CacheProxyConnection is not None:
            return CacheProxyConnection(self.connection_class(**kwargs), self.cache, self._lock)
        return self.connection_class(**kwargs)

    def re_auth_callback(self, token: Any) -> None:
        """A streaming credential provider's new token: re-authenticate every connection."""
        _release_events.re_auth(self, token)

    def disconnect(self, inuse_connections: bool = True) -> None:
        """Close idle connections; with ``inuse_connections`` also the ones out now.

        Idle connections are shared by pools with the same settings for the
        same server, so theirs are closed too (they reconnect on demand).
        Connections in use stay checked out and reconnect on their next command.
        The calling thread's are closed now; those other threads have out have
        their sockets shut down (the server sees them go, and a command in
        flight fails as redis-py's would) and are closed by their holder, at
        its next error or when it gives them back: never under its feet.
        """
        self._bury_idle()
        if inuse_connections:
            here, elsewhere = self._in_use_split()
            for connection in elsewhere:
                _unwatch(connection)
                _shut_down(connection)
            for connection in here:
                _unwatch(connection)
                connection.disconnect()
        _otel.settle(self)

    def disconnect_free_connections(self, moving_address_src: Optional[str] = None) -> None:
        """Close idle connections (redis-py calls it on cluster topology refreshes).

        redis-py's own version calls ``disconnect()`` on each idle connection
        behind the budget's back: the record would stay idle under a closed
        fd number, and once a new socket reuses that number the health
        checker would take it for the dead idle socket and shut it down.
        Here they leave through the budget like any other dropped connection
        (all of this pool's idle ones when one matches ``moving_address_src``;
        they reconnect on demand).
        """
        if moving_address_src is not None and not any(
            self._should_update_connection(conn, "connected_address", moving_address_src)
            for conn in self._idle_list()
        ):
            return
        self._bury_idle()

    def _update_maint_notifications_configs_for_connections(self, *args: Any,
                                                            **kwargs: Any) -> None:
        # redis-py (a cluster client's constructor, for every node pool)
        # disconnects each idle connection after giving it the new settings,
        # behind the budget's back, as in disconnect_free_connections(). Idle
        # ones leave through the budget first and reconnect with the new
        # connection kwargs; redis-py then updates only the ones in use.
        self._bury_idle()
        super()._update_maint_notifications_configs_for_connections(*args, **kwargs)

    def close(self) -> None:
        """Close the pool: waiters fail with ``PoolClosedError``, so do later checkouts.

        Connections still out are closed when they come back.
        """
        self._close_core()
        self.disconnect(inuse_connections=True)

    def __enter__(self) -> Any:  # redis-py has it from 8.1 on
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SafeConnectionPool(_core.PoolCore, SyncPoolMethods, ConnectionPool):
    """A drop-in ``redis.ConnectionPool`` / ``BlockingConnectionPool``.

    Every pool object for one server (transport, address, db, username,
    protocol) draws from one process-wide budget of ``max_connections``:
    however many pools point at a server, the process never holds more.
    ``get_connection()`` waits up to ``timeout`` seconds (``None``: forever,
    ``0``: never) in FIFO order with the GIL released, then raises
    ``PoolTimeoutError`` (a ``redis.exceptions.MaxConnectionsError``). While
    the health checker sees the server down or loading it fails fast with
    ``ServerUnavailableError``.

    ``max_idle_time`` / ``max_lifetime`` (seconds, default off) close idle
    connections that sat unused or lived too long (lifetimes are jittered
    by up to 10%). ``leak_threshold`` (seconds, default off) reports a
    connection held longer, once, with the stack that checked it out.
    """

    _client_pool = ConnectionPool

    if TYPE_CHECKING:  # SyncPoolMethods makes one of the client family's connections
        def make_connection(self) -> Connection: ...
