"""The last acquire failure per endpoint (scrubbed), and endpoint labels for the observability hooks."""

from __future__ import annotations

import threading
import time
from typing import Any, Dict

from ._endpoint_keys import endpoint_of
from ._redact import scrub, secrets_of
from ._tables import forget_oldest

_lock = threading.Lock()
_failures: Dict[str, Dict[str, Any]] = {}


def endpoint_label(pool: Any) -> str:
    """The pool's endpoint label (``pool.endpoint``); for another kind of pool, the
    label a safe pool with its settings would have (``_endpoint_keys.endpoint_of``)."""
    label = getattr(pool, "endpoint", None)
    if isinstance(label, str):
        return label
    try:
        return endpoint_of(pool.connection_class, pool.connection_kwargs)[0]
    except (AttributeError, TypeError, ValueError):
        return f"<{type(pool).__name__} with unusable connection settings>"


def note_acquire_failed(pool: Any, exc: BaseException) -> None:
    """Hook: call just before ``get_connection()`` raises; ``explain()`` shows the last one."""
    label = endpoint_label(pool)
    message = scrub(str(exc), secrets_of(getattr(pool, "connection_kwargs", None)))
    with _lock:
        if label not in _failures:
            forget_oldest(_failures)
        _failures[label] = {
            "time": time.time(),
            "error": type(exc).__name__,
            "message": message,
            "thread": threading.current_thread().name,
        }


def last_failures() -> Dict[str, Dict[str, Any]]:
    """The last acquire failure per endpoint label."""
    return dict(_failures)


def reset() -> None:
    with _lock:
        _failures.clear()
