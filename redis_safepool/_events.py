"""Logs the C core's state transitions (logger ``redis_safepool``) from one daemon thread."""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Callable, List

from . import _core

logger = logging.getLogger("redis_safepool")

_lock = threading.Lock()
_pid = 0
_listeners: List[Callable[[float, str, str, str, str], None]] = []


def add_listener(fn: Callable[[float, str, str, str, str], None]) -> None:
    """Call ``fn(when, endpoint, old_state, new_state, reason)`` on every transition."""
    _listeners.append(fn)


def _pump() -> None:
    while True:
        try:
            events, dropped = _core.wait_events(1.0)
        except Exception:  # pragma: no cover - interpreter shutting down
            return
        if dropped:
            logger.warning("redis_safepool: %d state events were dropped (ring full)", dropped)
        for when, endpoint, old, new, reason in events:
            level = logging.INFO if new in ("ready", "recovering") else logging.WARNING
            if old == new:
                logger.warning("%s: %s", endpoint, reason)
            else:
                logger.log(level, "%s: %s -> %s (%s)", endpoint, old, new, reason)
            for fn in list(_listeners):
                try:
                    fn(when, endpoint, old, new, reason)
                except Exception:  # a listener must not stop the logging
                    logger.exception("redis_safepool event listener failed")
        if _pid != os.getpid():
            return


def ensure_started() -> None:
    """Start the logging thread once per process (again in a forked child)."""
    global _pid
    if _pid == os.getpid():
        return
    with _lock:
        if _pid == os.getpid():
            return
        _pid = os.getpid()
        threading.Thread(target=_pump, name="redis-safepool-events", daemon=True).start()


@atexit.register
def _shutdown() -> None:
    _core.shutdown()
