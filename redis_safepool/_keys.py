"""Which budget a pool draws from (endpoint key) and which idle connections it may reuse (flavor)."""

from __future__ import annotations

import itertools
import weakref
from typing import Any, Dict, Mapping, Tuple

import redis.connection as sync_conn

try:  # the asyncio classes share budgets with the sync ones
    import redis.asyncio.connection as async_conn
except ImportError:  # pragma: no cover - redis without asyncio support
    async_conn = None  # type: ignore[assignment]

__all__ = ["endpoint_of", "flavor_id", "transport_of"]

_UNIX = tuple(
    c for c in (sync_conn.UnixDomainSocketConnection,
                getattr(async_conn, "UnixDomainSocketConnection", None)) if c
)
_TLS = tuple(c for c in (sync_conn.SSLConnection, getattr(async_conn, "SSLConnection", None)) if c)

# Objects that every pool builds for itself and that do not change what a
# connection talks to: pools whose kwargs differ only in these share idle
# connections. Anything else that is not a plain value is compared by identity.
_PER_POOL_OBJECTS = frozenset({
    "retry", "event_dispatcher", "himport_registry", "maint_notifications_config",
    "maint_notifications_pool_handler", "oss_cluster_maint_notifications_handler",
    "driver_info", "connection_pool",
})
_PLAIN = (str, bytes, int, float, bool, type(None))

_flavor_ids: Dict[str, int] = {}
_next_flavor = itertools.count(1)

# A serial number per class object, for as long as it lives (never reused, as
# id() would be): kombu makes a Connection subclass per channel, all with one
# module and qualname, and idle connections must never cross between them.
_class_serials: "weakref.WeakKeyDictionary[type, int]" = weakref.WeakKeyDictionary()
_next_class_serial = itertools.count(1)


def _class_key(cls: type) -> str:
    serial = _class_serials.get(cls)
    if serial is None:
        serial = _class_serials.setdefault(cls, next(_next_class_serial))
    return f"{cls.__module__}.{cls.__qualname__}#{serial}"


def add_transports(unix: Tuple[type, ...], tls: Tuple[type, ...]) -> None:
    """Another client family's unix-socket and TLS connection classes (valkey-py's)."""
    global _UNIX, _TLS
    _UNIX += tuple(c for c in unix if c not in _UNIX)
    _TLS += tuple(c for c in tls if c not in _TLS)


def transport_of(connection_class: type) -> str:
    if isinstance(connection_class, type):
        if issubclass(connection_class, _UNIX):
            return "unix"
        if issubclass(connection_class, _TLS):
            return "tls"
    return "tcp"


def _protocol(kwargs: Mapping[str, Any]) -> int:
    proto = kwargs.get("protocol")
    try:
        return int(proto) if proto is not None else 2
    except (TypeError, ValueError):
        raise ValueError(f"protocol must be 2 or 3, got {proto!r}") from None


def endpoint_of(connection_class: type, kwargs: Mapping[str, Any]) -> Tuple[str, str, Dict[str, Any]]:
    """Return (key, label, address) for the server these kwargs connect to.

    The key holds what makes connections interchangeable for the server:
    transport, address, db, username and protocol. The label is the same
    without secrets, for people. The address is what the health checker uses.
    """
    transport = transport_of(connection_class)
    username = kwargs.get("username")
    db = kwargs.get("db", 0) or 0
    protocol = _protocol(kwargs)
    password = kwargs.get("password")
    addr: Dict[str, Any] = {
        "username": username if isinstance(username, str) else None,
        "password": password if isinstance(password, str) else None,
        "tls": transport == "tls",
    }
    user = f"{username}@" if username else ""
    if transport == "unix":
        path = kwargs.get("path") or ""
        label = f"unix://{user}{path}?db={db}"
        addr["unix_path"] = path
    else:
        host = str(kwargs.get("host", "localhost") or "localhost").lower()
        port = int(kwargs.get("port", 6379) or 6379)
        scheme = "rediss" if transport == "tls" else "redis"
        shown = f"[{host}]" if ":" in host else host
        label = f"{scheme}://{user}{shown}:{port}/{db}"
        addr["host"] = host
        addr["port"] = port
    if protocol != 2:
        label += f"{'&' if '?' in label else '?'}protocol={protocol}"
    return label, label, addr


def _value_key(name: str, value: Any) -> str:
    if isinstance(value, _PLAIN):
        return repr(value)
    if name in _PER_POOL_OBJECTS:
        return type(value).__qualname__
    if isinstance(value, type):
        return _class_key(value)
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    if isinstance(value, (list, tuple, frozenset, set)):
        return repr(sorted(map(repr, value)))
    return f"{type(value).__qualname__}@{id(value):x}"


def flavor_id(connection_class: type, kwargs: Mapping[str, Any]) -> int:
    """A small int, equal for pools whose connections are interchangeable."""
    parts = [_class_key(connection_class)]
    parts += [f"{k}={_value_key(k, v)}" for k, v in sorted(kwargs.items())]
    key = "\x1f".join(parts)
    fid = _flavor_ids.get(key)
    if fid is None:
        fid = _flavor_ids.setdefault(key, next(_next_flavor))
    return fid
