"""Framework-neutral mapping of Redis availability errors to a 503 JSON body and Retry-After."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Set, Tuple, Type

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._redact import scrub
from .exceptions import PoolTimeoutError, SafePoolError, ServerUnavailableError

__all__ = ["unavailable_types", "find_unavailable", "error_body", "retry_after_header"]


def unavailable_types(include_connection_errors: bool = True) -> Tuple[Type[BaseException], ...]:
    """SafePoolError alone, or also redis-py's ConnectionError/TimeoutError (a reset mid-command)."""
    if include_connection_errors:
        return (RedisConnectionError, RedisTimeoutError)
    return (SafePoolError,)


def find_unavailable(exc: Optional[BaseException], include_connection_errors: bool = True) -> Optional[BaseException]:
    """The availability error in ``exc`` or its cause/context chain (django-redis wraps them)."""
    types = unavailable_types(include_connection_errors)
    seen: Set[int] = set()
    while exc is not None and id(exc) not in seen and len(seen) < 16:
        if isinstance(exc, types):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def error_body(exc: BaseException, secrets: Iterable[Optional[str]] = ()) -> Dict[str, Any]:
    """JSON body of the 503: a stable code, the exception class and its message.

    The pool masks its password in the errors it raises; ``secrets`` (the
    app's passwords) are masked here too, for errors raised past the pool.
    """
    if isinstance(exc, ServerUnavailableError):
        code = "redis_unavailable"
    elif isinstance(exc, PoolTimeoutError):
        code = "redis_pool_timeout"
    else:
        code = "redis_connection_error"
    return {"error": code, "type": type(exc).__name__, "detail": scrub(str(exc), secrets)}


def retry_after_header(seconds: Any) -> str:
    """Retry-After as whole seconds, at least 1."""
    try:
        return str(max(1, int(round(float(seconds)))))
    except (TypeError, ValueError):
        return "1"
