"""The leak watcher: connections held past their threshold, or dropped unreleased, reported with the checkout's stack."""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import Any, Deque, Dict, List, Optional

from ._failures import endpoint_label
from ._tables import Stack, capture, format_stack

logger = logging.getLogger("redis_safepool")
leak_logger = logging.getLogger("redis_safepool.leak")


class _Held:
    """One checked-out connection under leak watch."""

    __slots__ = ("label", "since", "stack", "threshold", "reported", "thread")

    def __init__(self, label: str, since: float, stack: Stack, threshold: float) -> None:
        self.label = label
        self.since = since
        self.stack = stack
        self.threshold = threshold
        self.reported = False
        self.thread = threading.current_thread().name


_lock = threading.Lock()
leak_threshold: Optional[float] = None  # process-wide; a pool's own leak_threshold wins
# Fast-path flag read by note_checkout/note_release: True once any leak threshold is set.
_leak_on = False
_held: Dict[int, _Held] = {}
_leak_reports: Deque[Dict[str, Any]] = collections.deque(maxlen=100)
_watcher: Optional[threading.Thread] = None
_watcher_pid = 0
_watcher_wake = threading.Event()


def enable() -> None:
    """A leak threshold is set somewhere: checkouts are watched from now on."""
    global _leak_on
    _leak_on = True


def set_threshold(seconds: Optional[float]) -> None:
    global leak_threshold
    leak_threshold = seconds
    if seconds is not None:
        enable()
        _watcher_wake.set()  # re-evaluate the watcher's interval


def note_checkout(pool: Any, conn: Any) -> None:
    """Hook: call after a connection is handed out. One flag test when leak tracking is off."""
    if not _leak_on:
        return
    threshold = getattr(pool, "leak_threshold", None) or leak_threshold
    if not threshold:
        return
    _held[id(conn)] = _Held(endpoint_label(pool), time.monotonic(), capture(1), float(threshold))
    if _watcher_pid != os.getpid():
        _start_watcher()


def note_release(pool: Any, conn: Any) -> None:
    """Hook: call when a connection comes back (release or discard). Cheap when nothing is held."""
    if not _held:
        return
    rec = _held.pop(id(conn), None)
    if rec is not None and rec.reported:
        leak_logger.warning(
            "leaked connection to %s released after %.1fs", rec.label, time.monotonic() - rec.since
        )


def note_dropped(pool: Any, conn_id: int) -> None:
    """Hook: a checked-out connection became unreachable without release; its slot came back."""
    if not _leak_on:
        return
    rec = _held.pop(conn_id, None)
    if rec is None:
        leak_logger.warning(
            "connection to %s was dropped without release; its slot came back", endpoint_label(pool)
        )
        return
    leak_logger.warning(
        "connection to %s was dropped without release after %.1fs; its slot came back. "
        "Checked out by thread %s at:\n%s",
        rec.label, time.monotonic() - rec.since, rec.thread, format_stack(rec.stack),
    )


def check_leaks(now: Optional[float] = None) -> List[Dict[str, Any]]:
    """Report (once each) connections held past their threshold; returns the new reports."""
    if not _held:
        return []
    now = time.monotonic() if now is None else now
    new: List[Dict[str, Any]] = []
    for key, rec in list(_held.items()):
        age = now - rec.since
        if rec.reported or age < rec.threshold:
            continue
        rec.reported = True
        report = {
            "endpoint": rec.label,
            "held_for": age,
            "leak_threshold": rec.threshold,
            "thread": rec.thread,
            "stack": format_stack(rec.stack),
        }
        new.append(report)
        _leak_reports.append(report)
        leak_logger.warning(
            "connection to %s held for %.1fs (leak_threshold=%gs) by thread %s; checked out at:\n%s",
            rec.label, age, rec.threshold, rec.thread, report["stack"],
        )
    return new


def leaks() -> List[Dict[str, Any]]:
    """Every leak reported so far (most recent 100)."""
    return list(_leak_reports)


def held() -> int:
    """Connections currently under leak watch."""
    return len(_held)


def _watch_interval() -> float:
    thresholds = [r.threshold for r in list(_held.values())]
    if leak_threshold:
        thresholds.append(leak_threshold)
    return min(1.0, max(0.05, min(thresholds) / 2)) if thresholds else 1.0


def _watch_loop() -> None:
    while True:
        _watcher_wake.wait(_watch_interval())
        _watcher_wake.clear()
        try:
            check_leaks()
        except Exception:  # pragma: no cover - never kill the watcher
            logger.exception("leak check failed")


def _start_watcher() -> None:
    global _watcher, _watcher_pid
    with _lock:
        if _watcher_pid == os.getpid():
            return
        _watcher_pid = os.getpid()
        _watcher = threading.Thread(target=_watch_loop, name="redis-safepool-leaks", daemon=True)
        _watcher.start()


def leak_tracking() -> bool:
    """Whether a process-wide leak threshold is set (pools made from now on are tracked)."""
    return bool(leak_threshold)


def reset() -> None:
    global leak_threshold, _leak_on
    with _lock:
        leak_threshold = None
        _leak_on = False
        _held.clear()
        _leak_reports.clear()


def _after_fork_in_child() -> None:
    global _watcher, _watcher_pid
    _held.clear()  # connections checked out in the parent are not ours
    _watcher = None
    _watcher_pid = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
