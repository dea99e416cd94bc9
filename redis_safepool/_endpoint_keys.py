"""Which budget a pool draws from (endpoint key) and which idle connections it may reuse (flavor)."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import weakref
from typing import Any, Dict, List, Mapping, Tuple

import redis.connection as sync_conn

try:  # the asyncio classes share budgets with the sync ones
    import redis.asyncio.connection as async_conn
except ImportError:  # pragma: no cover - redis without asyncio support
    async_conn = None  # type: ignore[assignment]

__all__ = ["endpoint_of", "flavor_ref", "FlavorRef", "transport_of"]

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

# Flavor table: digest of the flavor's settings -> [flavor id, live references].
# Keyed by a keyed hash (the key is random per process and never leaves it),
# so the settings, passwords included, are neither kept nor recoverable
# offline; an entry goes when the last pool or event loop using it does.
_flavor_key = os.urandom(32)
_flavors: Dict[bytes, List[int]] = {}
_flavors_lock = threading.RLock()  # a FlavorRef may be collected while it is held
_next_flavor = itertools.count(1)
_MAX_PORT = 65535

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
    if proto is None:
        return 2
    if isinstance(proto, int) and not isinstance(proto, bool) and proto in (2, 3):
        return proto
    if isinstance(proto, str) and proto.strip() in ("2", "3"):
        return int(proto)
    raise ValueError(f"protocol must be 2 or 3, got {proto!r}")


def _port(kwargs: Mapping[str, Any]) -> int:
    port = kwargs.get("port")
    if port is None:
        return 6379
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int):
        raise ValueError(f"port must be an int from 1 to {_MAX_PORT}, got {port!r}")
    if not 1 <= port <= _MAX_PORT:
        raise ValueError(f"port must be from 1 to {_MAX_PORT}, got {port}")
    return port


def _host(kwargs: Mapping[str, Any]) -> str:
    host = kwargs.get("host")
    if host is None:
        return "localhost"
    if not isinstance(host, str):
        raise ValueError(f"host must be a str, got {type(host).__name__} ({host!r})")
    if not host.strip():
        raise ValueError(f"host must not be empty, got {host!r}")
    return host.lower()


def _db(kwargs: Mapping[str, Any]) -> int:
    db = kwargs.get("db")
    if db is None:
        return 0
    if isinstance(db, str) and db.strip().isdigit():
        db = int(db)
    if isinstance(db, bool) or not isinstance(db, int):
        raise ValueError(f"db must be an int >= 0, got {db!r}")
    if db < 0:
        raise ValueError(f"db must be >= 0, got {db}")
    return db


def endpoint_of(connection_class: type, kwargs: Mapping[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """Return (key, address) for the server these kwargs connect to.

    The key holds what makes connections interchangeable for the server:
    transport, address, db, username and protocol; it holds no secret, so it
    is also the endpoint's label for people (``pool.endpoint``). The address
    is what the health checker uses.
    """
    transport = transport_of(connection_class)
    username = kwargs.get("username")
    db = _db(kwargs)
    protocol = _protocol(kwargs)
    password = kwargs.get("password")
    addr: Dict[str, Any] = {
        "username": username if isinstance(username, str) else None,
        "password": password if isinstance(password, str) else None,
        "tls": transport == "tls",
    }
    user = f"{username}@" if username else ""
    if transport == "unix":
        path = kwargs.get("path")
        if not isinstance(path, str) or not path:
            raise ValueError(f"a unix socket connection needs a path, got {path!r}")
        key = f"unix://{user}{path}?db={db}"
        addr["unix_path"] = path
    else:
        host = _host(kwargs)
        port = _port(kwargs)
        scheme = "rediss" if transport == "tls" else "redis"
        shown = f"[{host}]" if ":" in host else host
        key = f"{scheme}://{user}{shown}:{port}/{db}"
        addr["host"] = host
        addr["port"] = port
    if protocol != 2:
        key += f"{'&' if '?' in key else '?'}protocol={protocol}"
    return key, addr


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


class FlavorRef:
    """A counted reference to a flavor id; the table entry goes with the last one."""

    __slots__ = ("id", "_digest")

    def __init__(self, fid: int, digest: bytes) -> None:
        self.id = fid
        self._digest = digest

    def __del__(self) -> None:
        try:
            _unref(self._digest)
        except Exception:  # pragma: no cover - interpreter teardown
            pass

    def __repr__(self) -> str:
        return f"<FlavorRef {self.id}>"


def _unref(digest: bytes) -> None:
    with _flavors_lock:
        entry = _flavors.get(digest)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del _flavors[digest]


def flavor_ref(connection_class: type, kwargs: Mapping[str, Any]) -> FlavorRef:
    """A reference to the flavor id of these settings: equal for pools whose
    connections are interchangeable, as long as any reference to it lives."""
    parts = [_class_key(connection_class)]
    parts += [f"{k}={_value_key(k, v)}" for k, v in sorted(kwargs.items())]
    data = "\x1f".join(parts).encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(data, key=_flavor_key, digest_size=16).digest()
    with _flavors_lock:
        entry = _flavors.get(digest)
        if entry is None:
            entry = _flavors[digest] = [next(_next_flavor), 0]
        entry[1] += 1
        return FlavorRef(entry[0], digest)


def flavor_count() -> int:
    """Entries in the flavor table (settings some live pool or event loop uses)."""
    return len(_flavors)
