"""redis-safepool: a redis-py connection pool that cannot take a Redis server down."""

from typing import Any, Dict, Optional, Tuple, Union, cast

from redis.connection import ConnectionPool, parse_url

from . import _core, observe
from ._pool_base import (
    _check_max_connections,
    _check_positive_seconds,
    _check_server_reserve,
    check_host_budget,
    check_scope,
    check_url,
    host_segment_name,
    warn_host_scope,
    warn_scope_conflict,
)
from ._close_dropped import dispose
from ._endpoint_keys import endpoint_of
from . import exceptions as _exceptions
from .exceptions import *  # noqa: F403 (every error, named once in exceptions.__all__)
from .pool import SafeConnectionPool

_core._set_disposer(dispose)
_core._set_failure_hook(observe.note_acquire_failed)

__version__ = "0.1.0"

__all__ = [
    "SafeConnectionPool",
    "BlockingSafeConnectionPool",
    "stats",
    "configure",
    "checker_config",
    "host_stats",
    *_exceptions.__all__,
]

# redis-py has two pool classes; ours waits like BlockingConnectionPool and
# is bounded like both. The alias reads well where code names the blocking one.
BlockingSafeConnectionPool = SafeConnectionPool


def stats() -> Dict[str, Dict[str, Any]]:
    """Counters of every endpoint in this process: ``{label: {...}}``."""
    return _core.stats()


def _endpoint_of_target(target: Union[str, ConnectionPool], what: str) -> Tuple[str, Dict[str, Any]]:
    """(key, address) of the endpoint a URL or a pool names, for ``what()``."""
    if isinstance(target, ConnectionPool):
        cls, kwargs = target.connection_class, target.connection_kwargs
    elif isinstance(target, str):
        check_url(target)
        kwargs = parse_url(target)
        cls = kwargs.pop("connection_class", None) or ConnectionPool().connection_class
    else:
        raise TypeError(f"{what}() takes a URL or a pool, not {type(target).__name__}")
    return endpoint_of(cls, kwargs)


def configure(target: Union[str, ConnectionPool], max_connections: int,
              scope: Optional[str] = None) -> None:
    """Set the budget of an endpoint explicitly (the override for "first pool wins").

    ``target`` is a URL (``redis://host:port/db``) or a pool. Lowering the
    budget takes effect as connections come back; pools made later for the
    endpoint use it even if they ask for another value. ``scope="host"``
    makes it one budget for every process of this user on this host (the
    default: ``$REDIS_SAFEPOOL_SCOPE``, else ``"process"``); an endpoint
    keeps the scope it was made with.
    """
    max_connections = _check_max_connections(max_connections, allow_none=False)
    scope = check_scope(scope)
    check_host_budget(scope, max_connections)
    label, addr = _endpoint_of_target(target, "configure")
    shm_name = host_segment_name(label) if scope == "host" else None
    note = _core.set_budget(label, max_connections, shm_name=shm_name, **addr)
    if note is not None:
        warn_host_scope(label, note)
    elif _core.stats().get(label, {}).get("scope", scope) != scope:
        warn_scope_conflict(label, _core.stats()[label]["scope"], scope)


def host_stats(target: Union[str, ConnectionPool]) -> Dict[str, Any]:
    """The host budget of an endpoint as every process on this host shares it, read
    from its shared segment without attaching to it (works from outside the
    application): ``max_connections``, ``total``, ``in_use``, ``processes``,
    ``waiting``, ``reclaimed``, the shared health ``state`` ("unknown" until
    one is published), ``connecting`` / ``max_connecting`` (recovering: the
    host's connects and their limit), ``probes_led`` / ``probes_skipped``
    (probes made under the probe lease / skipped for another process's).
    ``OSError`` when there is none."""
    key = _endpoint_of_target(target, "host_stats")[0]
    return _core.host_view(host_segment_name(key))


def checker_config(**changes: Optional[float]) -> Dict[str, Any]:
    """Read (no arguments) or change the health checker's settings.

    Keys: ``interval`` (s between probes while ready, default 1),
    ``recover_interval`` (0.1), ``backoff_min`` (0.05), ``backoff_max``
    (0.3), ``probe_timeout`` (1), ``enabled`` (True), ``server_reserve``
    (0.1: the fraction of the server's ``maxclients`` left free for
    everyone else) and ``server_reserve_min`` (4: at least that many);
    both 0 turn fleet-aware admission off.
    """
    for name, value in changes.items():
        if name == "enabled":
            if not isinstance(value, bool):
                raise TypeError(f"enabled must be True or False, not {value!r}")
        elif name in ("server_reserve", "server_reserve_min"):
            _check_server_reserve(name, value)
        elif name in _CHECKER_SECONDS:
            _check_positive_seconds(name, value)
        else:
            raise TypeError(f"checker_config() got an unexpected keyword argument {name!r}")
    return _core.checker_config(**cast(Dict[str, Any], changes))


_CHECKER_SECONDS = ("interval", "recover_interval", "backoff_min", "backoff_max", "probe_timeout")
