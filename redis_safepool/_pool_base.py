"""What the sync and asyncio pools share: argument checks, binding to a budget, views of the C books."""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from types import FrameType
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Type, TypeVar
from urllib.parse import urlparse

from . import _core, _events, observe
from . import exceptions as _redis_errors
from ._checks import check_seconds as _check_seconds
from ._endpoint_keys import FlavorRef, endpoint_of, flavor_ref
from ._redact import redact_url, scrub_exception, secrets_of
from .exceptions import BudgetConflictWarning, HostScopeWarning

DEFAULT_MAX_CONNECTIONS = 50
DEFAULT_TIMEOUT = _core.DEFAULT_TIMEOUT  # redis-py BlockingConnectionPool's default wait
URL_SCHEMES = ("redis://", "rediss://", "unix://", "valkey://", "valkeys://")  # valkey: redis_safepool.valkey
# connection kwargs never shown by repr(): secrets, and redis-py's internal plumbing
REPR_REDACTED = frozenset({"password", "username", "ssl_password", "credential_provider"})
REPR_OMITTED = frozenset({"himport_registry"})


# Argument checks shared by the pools, configure() and checker_config(): one
# place, so every entry point rejects the same values with the same words.

MAX_CONNECTIONS_LIMIT = 2**31 - 1  # the C core counts connections in an int
HOST_MAX_CONNECTIONS = 4096        # slots in a host budget's shared segment (csrc/core/host_budget.h)
SCOPES = ("process", "host")
SCOPE_ENV = "REDIS_SAFEPOOL_SCOPE"  # the default scope of pools and configure() calls without one


def check_scope(scope: Any) -> str:
    """The budget's scope: ``"process"`` or ``"host"``; ``None`` is the default,
    ``$REDIS_SAFEPOOL_SCOPE`` when set (and not empty), else ``"process"``."""
    where = "scope"
    if scope is None:
        scope = os.environ.get(SCOPE_ENV) or "process"
        where = SCOPE_ENV
    if not isinstance(scope, str):
        raise TypeError(f"scope must be 'process' or 'host', not {type(scope).__name__}")
    if scope not in SCOPES:
        raise ValueError(f"{where} must be 'process' or 'host', got {scope!r}")
    return scope


def check_host_budget(scope: str, max_connections: int) -> None:
    if scope == "host" and max_connections > HOST_MAX_CONNECTIONS:
        raise ValueError(
            f"max_connections must be <= {HOST_MAX_CONNECTIONS} with scope='host', "
            f"got {max_connections}"
        )


def host_segment_name(key: str) -> str:
    """The shared segment of an endpoint's host budget: a digest of the user and the
    endpoint key (never a host name or a user name in clear)."""
    uid = os.geteuid() if hasattr(os, "geteuid") else 0
    digest = hashlib.sha256(f"redis-safepool\0{uid}\0{key}".encode()).hexdigest()
    return f"/redis-safepool-{digest[:40]}"


def warn_host_scope(label: str, why: str) -> None:
    warnings.warn(
        f"{label}: scope='host' is not available ({why}); this process keeps a budget "
        f"of its own for it",
        HostScopeWarning,
        stacklevel=_caller_stacklevel(),
    )


def warn_scope_conflict(label: str, scope: str, asked: str) -> None:
    warnings.warn(
        f"{label} already has a budget of scope={scope!r} set by the first pool for it; "
        f"this pool asked for scope={asked!r} and shares the existing budget.",
        BudgetConflictWarning,
        stacklevel=_caller_stacklevel(),
    )


def _check_max_connections(value: Any, allow_none: bool = True) -> int:
    """The budget asked for; for a pool ``None`` and ``0`` mean the default, as ``0`` does
    in redis-py (``allow_none=False``, as ``configure()`` asks: neither is a budget)."""
    if allow_none and (value is None or (value == 0 and type(value) is int)):
        return DEFAULT_MAX_CONNECTIONS
    if isinstance(value, bool) or not isinstance(value, int):
        # ValueError, not TypeError: what redis-py's pools raise for a non-int
        raise ValueError(
            f"max_connections must be an int >= 1, not {type(value).__name__} ({value!r})"
        )
    if value < 1:
        raise ValueError(f"max_connections must be >= 1, got {value}")
    if value > MAX_CONNECTIONS_LIMIT:
        raise ValueError(f"max_connections must be <= {MAX_CONNECTIONS_LIMIT}, got {value}")
    return value


def _check_positive_seconds(name: str, value: Any) -> float:
    """A finite duration in seconds > 0 (the health checker's intervals and timeouts)."""
    seconds = _check_seconds(name, value, allow_none=False)
    if not seconds:
        raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
    return seconds


def _check_server_reserve(name: str, value: Any) -> None:
    """The reserve kept free on a server: a fraction in [0, 1), or a count >= 0."""
    if name == "server_reserve":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"server_reserve must be a number, not {type(value).__name__}")
        if not 0 <= value < 1:  # also rejects nan
            raise ValueError(
                f"server_reserve must be a fraction of maxclients in [0, 1), got {value!r}"
            )
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"server_reserve_min must be an int, not {type(value).__name__}")
    if not 0 <= value <= 2**31 - 1:
        raise ValueError(f"server_reserve_min must be >= 0, got {value!r}")


def _check_connection_kwargs(kwargs: Any) -> None:
    """The numeric connection settings redis-py would only trip over at connect time."""
    if not kwargs:
        return
    for name in ("socket_timeout", "socket_connect_timeout"):
        if kwargs.get(name) is not None:
            _check_seconds(name, kwargs[name], allow_none=False)
    if kwargs.get("health_check_interval") is not None:
        _check_seconds("health_check_interval", kwargs["health_check_interval"], allow_none=False)


def _caller_stacklevel() -> int:
    """stacklevel for warnings.warn that points at the code that made the pool."""
    level, frame = 1, sys._getframe(1)  # type: int, Optional[FrameType]
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not (module == "redis" or module.startswith(("redis.", "redis_safepool"))):
            return level
        frame = frame.f_back
        level += 1
    return 1


def check_url(url: Any) -> None:
    """Reject URLs redis-py would silently misread (a db path that is not a number).

    Messages show the URL with its password masked.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    if not url.startswith(URL_SCHEMES):
        # redis-py's own check and words: "redis:host:1" lacks the "//", it is no db path
        raise ValueError(
            "Redis URL must specify one of the following schemes (redis://, rediss://, unix://)"
        )
    parsed = urlparse(url)
    if parsed.scheme in ("redis", "rediss", "valkey", "valkeys"):
        db = parsed.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(
                f"the path of a redis URL is the db number, got {parsed.path!r} in {redact_url(url)!r}"
            )
        try:
            port = parsed.port
        except ValueError as exc:
            raise ValueError(f"bad port in {redact_url(url)!r}: {exc}") from None
        if port == 0:  # redis-py would read it as "no port" and use 6379
            raise ValueError(f"port must be from 1 to 65535, got 0 in {redact_url(url)!r}")


def _warn_budget_conflict(label: str, budget: int, asked: int) -> None:
    warnings.warn(
        f"{label} already has a budget of max_connections={budget} set by the first "
        f"pool for it; this pool asked for {asked} and shares the existing budget. "
        f"Call redis_safepool.configure(...) to change it.",
        BudgetConflictWarning,
        stacklevel=_caller_stacklevel(),
    )


# Client modules whose classes read the pool's connection_kwargs in __init__,
# and the (family, kind) of pool each needs.
_CLIENT_MODULES = {
    "redis.client": ("redis", "sync"),
    "redis.asyncio.client": ("redis", "asyncio"),
    "valkey.client": ("valkey", "sync"),
    "valkey.asyncio.client": ("valkey", "asyncio"),
}
_RIGHT_POOL = {
    ("redis", "sync"): "redis_safepool.SafeConnectionPool",
    ("redis", "asyncio"): "redis_safepool.asyncio.SafeConnectionPool",
    ("valkey", "sync"): "redis_safepool.valkey.SafeConnectionPool",
    ("valkey", "asyncio"): "redis_safepool.valkey.asyncio.SafeConnectionPool",
}


def _wrong_client(pool: Any, client: Any, needs: Any) -> TypeError:
    family, kind = pool._client
    made = f"{type(pool).__module__}.{type(pool).__qualname__}"
    user = f"{type(client).__module__}.{type(client).__qualname__}" if client else needs[0]
    return TypeError(
        f"{user} needs a {needs[1]} {needs[0]} pool: use {_RIGHT_POOL[needs]}; "
        f"{made} is the {kind} pool for {family} clients"
    )


_Pool = TypeVar("_Pool", bound="PoolBase")

if TYPE_CHECKING:  # every pool class has _core.PoolCore as another base (see pool.py)
    from ._core import _PoolCoreAPI as _CoreBase
else:
    _CoreBase = object


class PoolBase(_CoreBase):
    """Mixin for pools built on ``_core.PoolCore`` (sync and asyncio).

    redis-py's own ``__init__``/``reset`` assign ``_available_connections``
    and ``_in_use_connections``; here they are read-only views of the
    records the C core keeps, so assignments are ignored.

    ``_errors`` names the exception classes of the pool's client family
    (the C core raises them); ``_client`` is ``(family, kind)``.
    """

    __slots__ = ()
    _otel_on = False  # OpenTelemetry metrics recorded (see _otel.bind)

    def __repr__(self) -> str:
        """redis-py's shape, which tools parse; the pool's own figures are in ``stats()``."""
        kwargs = ",".join(
            f"{k}={'<REDACTED>' if k in REPR_REDACTED else v}"
            for k, v in self.connection_kwargs.items()
            if k not in REPR_OMITTED
        )
        cls, conn_cls = type(self), self.connection_class
        return (f"<{cls.__module__}.{cls.__name__}"
                f"(<{conn_cls.__module__}.{conn_cls.__name__}({kwargs})>)>")

    _errors: Any = _redis_errors
    _client = ("redis", "sync")

    def _take_lifetimes(self, max_idle_time: Any, max_lifetime: Any, leak_threshold: Any) -> None:
        """``max_idle_time`` / ``max_lifetime`` (seconds, default off): the checker closes
        idle connections that sat unused or lived too long (lifetimes jittered by up to
        10%). ``leak_threshold`` (seconds, default off): a connection held longer is
        reported once, with the stack that checked it out."""
        self._max_idle_time = _check_seconds("max_idle_time", max_idle_time or 0, False, forever=0.0)
        self._max_lifetime = _check_seconds("max_lifetime", max_lifetime or 0, False, forever=0.0)
        self.leak_threshold = _check_seconds("leak_threshold", leak_threshold, allow_none=True)

    def _apply_idle_limits(self) -> None:
        """Give the endpoint this pool's idle limits (after every (re)binding)."""
        if getattr(self, "_max_idle_time", 0) or getattr(self, "_max_lifetime", 0):
            self._set_idle_limits(self._max_idle_time, self._max_lifetime)

    def _checkout_dropped(self, conn_id: int) -> None:
        """Called by the core when a checked-out connection went away unreleased (its slot is back)."""
        observe.note_dropped(self, conn_id)

    def _scrub_in_flight(self, exc: BaseException) -> None:
        """Mask this pool's credentials in an exception on its way to a caller: one the
        pool reports, or one redis-py raised through a checkout being released (a
        reconnect inside a command never passes through the pool)."""
        scrub_exception(exc, secrets_of(self.connection_kwargs))

    @property
    def connection_kwargs(self) -> Dict[str, Any]:
        """The connection settings (as redis-py's pools).

        Every client class reads them in its constructor; a client of
        another family or kind (``redis.Redis`` given an asyncio pool,
        ``valkey.Valkey`` a redis-py one) gets a ``TypeError`` there, before
        anything is checked out.
        """
        frame = sys._getframe(1)
        if frame.f_code.co_name == "__init__":
            needs = _CLIENT_MODULES.get(frame.f_globals.get("__name__", ""))
            if needs is not None and needs != self._client:
                raise _wrong_client(self, frame.f_locals.get("self"), needs)
        return self._connection_kwargs  # where redis-py 8 keeps them too

    @connection_kwargs.setter
    def connection_kwargs(self, value: Dict[str, Any]) -> None:
        self._connection_kwargs = value

    @property
    def max_connections(self) -> int:
        """The endpoint's budget, which every pool for the server shares.

        It is the value this pool asked for (``requested_max_connections``)
        unless an earlier pool or ``configure()`` set another one.
        """
        requested = self.__dict__.get("requested_max_connections", DEFAULT_MAX_CONNECTIONS)
        if self.endpoint is None:
            return requested
        try:
            return self.stats()["max_connections"]
        except Exception:  # pragma: no cover - unbound or torn down
            return requested

    @max_connections.setter
    def max_connections(self, value: int) -> None:
        self.__dict__["requested_max_connections"] = value

    @property
    def requested_max_connections(self) -> int:
        """The ``max_connections`` this pool was made with."""
        return self.__dict__.get("requested_max_connections", DEFAULT_MAX_CONNECTIONS)

    # set by redis-py's ConnectionPool.__init__ and by _take_limits
    connection_class: Any
    timeout: Optional[float]
    _max_explicit: bool
    scope: str
    _scope_explicit: bool

    _flavor_ref: FlavorRef
    _connection_kwargs: Dict[str, Any]

    @classmethod
    def from_url(cls: Type[_Pool], url: str, **kwargs: Any) -> _Pool:
        """Build a pool from ``redis://``, ``rediss://`` or ``unix://`` URLs."""
        check_url(url)
        pool: _Pool = super().from_url(url, **kwargs)  # type: ignore[misc]
        return pool

    def _take_limits(self, connection_class: Any, max_connections: Any, timeout: Any,
                     scope: Any = None) -> int:
        """Check the pool's own arguments; set ``timeout`` and ``scope``; return the budget asked for."""
        if not isinstance(connection_class, type):
            raise TypeError(f"connection_class must be a class, not {connection_class!r}")
        self._max_explicit = max_connections not in (None, 0)
        self.timeout = _check_seconds("timeout", timeout, allow_none=True)  # inf: None, forever
        self.scope = check_scope(scope)
        self._scope_explicit = scope is not None or bool(os.environ.get(SCOPE_ENV))
        budget = _check_max_connections(max_connections)
        check_host_budget(self.scope, budget)
        return budget

    def _bind_budget(self) -> Dict[str, Any]:
        """(Re)attach to the budget of the endpoint the connection kwargs name; return its address."""
        _check_connection_kwargs(self.connection_kwargs)
        label, addr = endpoint_of(self.connection_class, self.connection_kwargs)
        flavor_kwargs = self.connection_kwargs
        cache = getattr(self, "cache", None)
        if cache is not None:
            # client-side caching: its connections are proxies bound to this cache
            # (redis-py pops cache_config from the kwargs), never a plain pool's
            flavor_kwargs = dict(flavor_kwargs, __cache__=cache)
        flavor = flavor_ref(self.connection_class, flavor_kwargs)
        asked = self.requested_max_connections
        asked_scope = getattr(self, "scope", "process")
        shm_name = host_segment_name(label) if asked_scope == "host" else None
        budget, created, scope, note = self._bind(label, asked, flavor.id,
                                                  shm_name=shm_name, **addr)
        self._flavor_ref = flavor  # keeps the flavor's table entry while this pool uses it
        if note is not None:
            warn_host_scope(label, note)
        elif scope != asked_scope and getattr(self, "_scope_explicit", False):
            warn_scope_conflict(label, scope, asked_scope)
        # a host budget may have been set by another process's first pool
        if budget != asked and self._max_explicit and (not created or scope == "host"):
            _warn_budget_conflict(label, budget, asked)
        _events.ensure_started()
        return addr

    @property
    def _available_connections(self) -> List[Any]:
        return self._idle_list()

    @_available_connections.setter
    def _available_connections(self, value: Any) -> None:
        pass

    @property
    def _in_use_connections(self) -> Set[Any]:
        return set(self._in_use_list())

    @_in_use_connections.setter
    def _in_use_connections(self, value: Any) -> None:
        pass

    @property
    def _created_connections(self) -> int:
        return len(self._idle_list()) + len(self._in_use_list())

    @_created_connections.setter
    def _created_connections(self, value: Any) -> None:
        pass

    def _get_free_connections(self) -> List[Any]:
        return self._idle_list()

    def _get_in_use_connections(self) -> Set[Any]:
        return set(self._in_use_list())

    def owns_connection(self, connection: Any) -> bool:
        return self._owns(connection)

    def set_retry(self, retry: Any) -> None:
        self.connection_kwargs.update({"retry": retry})
        for connection in self._idle_list() + self._in_use_list():
            connection.retry = retry
