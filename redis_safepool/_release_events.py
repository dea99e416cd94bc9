"""redis-py's release events and token re-authentication for the pools, at no cost to a pool nobody listens to."""

from __future__ import annotations

from typing import Any, List, Optional

try:  # redis-py >= 5.3 (Entra ID / streaming credential providers)
    from redis.event import (
        AfterConnectionReleasedEvent,
        AsyncAfterConnectionReleasedEvent,
        AsyncReAuthConnectionListener,
        ReAuthConnectionListener,
    )
except ImportError:  # pragma: no cover - an older redis-py: it dispatches no release events
    AfterConnectionReleasedEvent = AsyncAfterConnectionReleasedEvent = None  # type: ignore[misc,assignment]
    ReAuthConnectionListener = AsyncReAuthConnectionListener = None  # type: ignore[misc,assignment]

AVAILABLE = AfterConnectionReleasedEvent is not None

# redis-py's own listeners: they do something only for a connection that carries a token
_REAUTH_LISTENERS = tuple(t for t in (ReAuthConnectionListener, AsyncReAuthConnectionListener) if t)
_MISSING = object()


def _mapping(pool: Any) -> Optional[dict]:
    """The dispatcher's listener table, or None for a dispatcher we cannot look into."""
    mapping = getattr(getattr(pool, "_event_dispatcher", None), "_event_listeners_mapping", None)
    return mapping if isinstance(mapping, dict) else None


def _only_reauth(listeners: Any) -> bool:
    return isinstance(listeners, list) and all(type(x) in _REAUTH_LISTENERS for x in listeners)


def _carries_token(conn: Any) -> bool:
    # a connection without the attribute (a caching proxy keeps it on the
    # connection it wraps) is given to the listeners, which know
    return getattr(conn, "_re_auth_token", _MISSING) is not None


def bind(pool: Any) -> None:
    """Let the C release path dispatch ``AfterConnectionReleasedEvent`` when it may matter."""
    if not AVAILABLE or getattr(pool, "_event_dispatcher", None) is None:
        return
    pool._set_hooks(release_hook=on_release, event_mapping=_mapping(pool),
                    event_type=AfterConnectionReleasedEvent)


def on_release(pool: Any, conn: Any) -> None:
    """Called by the C release path (connection still checked out) when the
    listener list changed, or a token rotation is pending and ``conn`` may carry one."""
    mapping = _mapping(pool)
    listeners = mapping.get(AfterConnectionReleasedEvent) if mapping is not None else None
    if mapping is not None and _only_reauth(listeners):
        pool._set_quiet_listeners(listeners)  # next time C decides alone
        if not _carries_token(conn):
            return
    pool._event_dispatcher.dispatch(AfterConnectionReleasedEvent(conn))


def needs_async_event(pool: Any, conn: Any) -> bool:
    """asyncio: whether ``AsyncAfterConnectionReleasedEvent`` may do something for ``conn``."""
    if not AVAILABLE or getattr(pool, "_event_dispatcher", None) is None:
        return False
    mapping = _mapping(pool)
    if mapping is None:
        return True
    listeners = mapping.get(AsyncAfterConnectionReleasedEvent)
    if not listeners:
        return False
    return not _only_reauth(listeners) or _carries_token(conn)


def async_event_due(pool: Any, conn: Any) -> bool:
    """``needs_async_event()`` at the cost of a few lookups on every release: the
    pool keeps the listener list it last saw holding only redis-py's re-auth
    listener (``pool._quiet_async``: dispatcher, its table, the list, its length)
    and looks again only when the dispatcher, the table or the list changed."""
    quiet = pool._quiet_async
    if quiet is not None:
        dispatcher, mapping, listeners, n = quiet
        if (pool._event_dispatcher is dispatcher and dispatcher._event_listeners_mapping is mapping
                and mapping.get(AsyncAfterConnectionReleasedEvent) is listeners
                and len(listeners) == n):
            return _carries_token(conn)
    mapping = _mapping(pool) if AVAILABLE else None
    listeners = None if mapping is None else mapping.get(AsyncAfterConnectionReleasedEvent)
    if isinstance(listeners, list) and listeners and _only_reauth(listeners):
        pool._quiet_async = (pool._event_dispatcher, mapping, listeners, len(listeners))
    else:
        pool._quiet_async = None
    return needs_async_event(pool, conn)


def async_event(conn: Any) -> Any:
    return AsyncAfterConnectionReleasedEvent(conn)


def _auth(conn: Any, token: Any) -> None:
    """redis-py's re_auth_callback does this for each idle connection."""
    conn.retry.call_with_retry(
        lambda: conn.send_command("AUTH", token.try_get("oid"), token.get_value()),
        lambda error: None,
    )
    conn.retry.call_with_retry(lambda: conn.read_response(), lambda error: None)


def re_auth(pool: Any, token: Any) -> None:
    """A streaming credential provider rotated its token (sync pools).

    Idle connections are checked out (nobody else can use them meanwhile),
    re-authenticated and given back, as redis-py's pool does under its lock;
    connections in use, and idle ones that could not be taken, carry the token
    and re-authenticate when they are released.
    """
    taken: List[Any] = []
    while True:
        conn = pool._take_idle()
        if conn is None:
            break
        taken.append(conn)
    try:
        pool._set_hooks(reauth_pending=True)
        for conn in pool._in_use_list() + pool._idle_list():
            if not any(conn is t for t in taken):
                conn.set_re_auth_token(token)
        for conn in taken:
            try:
                _auth(conn, token)
            except Exception:
                conn.disconnect()  # reconnects (with the new credentials) on its next checkout
    finally:
        for conn in taken:
            pool.release(conn)


async def re_auth_async(pool: Any, token: Any) -> None:
    """asyncio pools: idle connections belong to their event loops, so every
    connection carries the token: idle ones re-authenticate at their next
    checkout, ones in use when they are released."""
    pool._reauth_pending = True
    for conn in pool._in_use_list() + pool._idle_list():
        conn.set_re_auth_token(token)
