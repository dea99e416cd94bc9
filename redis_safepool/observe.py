"""Cheap observability hooks pool.py calls: pool-per-request warning, leak reports, last acquire failure."""

from __future__ import annotations

import collections
import linecache
import logging
import os
import sys
from types import FrameType
import threading
import time
import warnings
from typing import Any, Deque, Dict, List, Optional, Tuple

from ._redact import scrub, secrets_of

__all__ = [
    "PoolPerRequestWarning",
    "configure",
    "reset",
    "note_pool_created",
    "note_checkout",
    "note_release",
    "note_dropped",
    "note_acquire_failed",
    "check_leaks",
    "leaks",
    "held",
    "last_failures",
    "endpoint_label",
    "explain",
]

logger = logging.getLogger("redis_safepool")
leak_logger = logging.getLogger("redis_safepool.leak")

DEFAULT_POOL_WARN_THRESHOLD = 32
_MAX_ENDPOINTS = 256  # endpoint labels remembered per table; the oldest go first
_MAX_SITES = 16  # distinct creation stacks remembered per endpoint
_MAX_FRAMES = 12  # frames kept per stack

Frame = Tuple[str, int, str]
Stack = Tuple[Frame, ...]


class PoolPerRequestWarning(RuntimeWarning):
    """The process created an unusual number of pool objects for one endpoint."""


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
_pool_warn_threshold: Optional[int] = DEFAULT_POOL_WARN_THRESHOLD
_leak_threshold: Optional[float] = None
# Fast-path flag read by note_checkout/note_release: True once any leak threshold is set.
_leak_on = False
_pools_created: Dict[str, int] = {}
_pool_sites: Dict[str, "collections.Counter[Stack]"] = {}
_warned: set = set()
_held: Dict[int, _Held] = {}
_leak_reports: Deque[Dict[str, Any]] = collections.deque(maxlen=100)
_failures: Dict[str, Dict[str, Any]] = {}
_watcher: Optional[threading.Thread] = None
_watcher_pid = 0
_watcher_wake = threading.Event()

_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
try:
    import redis as _redis

    _REDIS_DIR = os.path.dirname(os.path.abspath(_redis.__file__)) + os.sep
except Exception:  # pragma: no cover - redis is a hard dependency
    _REDIS_DIR = _PKG_DIR


_KEEP: Any = object()


def configure(pool_warn_threshold: Any = _KEEP, leak_threshold: Any = _KEEP) -> None:
    """Set the process-wide thresholds; pass None to disable one, omit to keep it.

    ``pool_warn_threshold``: pool objects created for one endpoint before the
    pool-per-request warning (default 32). ``leak_threshold``: seconds a
    connection may stay checked out before it is reported (default off; a
    pool's own ``leak_threshold`` attribute wins over this).
    """
    global _pool_warn_threshold, _leak_threshold, _leak_on
    from ._books import _check_seconds

    if pool_warn_threshold is not _KEEP:
        if pool_warn_threshold is not None and (
            isinstance(pool_warn_threshold, bool) or not isinstance(pool_warn_threshold, int)
        ):
            raise TypeError(f"pool_warn_threshold must be an int >= 1 or None, got {pool_warn_threshold!r}")
        if pool_warn_threshold is not None and pool_warn_threshold < 1:
            raise ValueError(f"pool_warn_threshold must be >= 1 or None, got {pool_warn_threshold}")
        _pool_warn_threshold = pool_warn_threshold
    if leak_threshold is not _KEEP:
        seconds = _check_seconds("leak_threshold", leak_threshold, allow_none=True)
        if seconds is not None and seconds <= 0:
            raise ValueError(f"leak_threshold must be > 0 seconds or None, got {leak_threshold!r}")
        _leak_threshold = seconds
        if _leak_threshold is not None:
            _leak_on = True
            _watcher_wake.set()  # re-evaluate the watcher's interval


def reset() -> None:
    """Forget every count, warning, held connection and failure (tests, after fork)."""
    global _pool_warn_threshold, _leak_threshold, _leak_on
    with _lock:
        _pool_warn_threshold = DEFAULT_POOL_WARN_THRESHOLD
        _leak_threshold = None
        _leak_on = False
        _pools_created.clear()
        _pool_sites.clear()
        _warned.clear()
        _held.clear()
        _leak_reports.clear()
        _failures.clear()


def _after_fork_in_child() -> None:
    global _watcher, _watcher_pid
    _held.clear()  # connections checked out in the parent are not ours
    _watcher = None
    _watcher_pid = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------------- labels


def endpoint_label(pool: Any) -> str:
    """The pool's endpoint label (``pool.endpoint``), or one built from its kwargs."""
    label = getattr(pool, "endpoint", None)
    if isinstance(label, str):
        return label
    kw = getattr(pool, "connection_kwargs", None) or {}
    if kw.get("path"):
        return f"unix://{kw['path']}?db={kw.get('db', 0)}"
    scheme = "rediss" if "ssl" in getattr(getattr(pool, "connection_class", None), "__name__", "").lower() else "redis"
    return f"{scheme}://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


# ---------------------------------------------------------------------- stacks


def _capture(skip: int) -> Stack:
    """Caller frames (innermost first) outside redis and redis_safepool; raw, no source lookup."""
    try:
        f: Optional[FrameType] = sys._getframe(skip + 1)
    except ValueError:
        return ()
    frames: List[Frame] = []
    while f is not None and len(frames) < _MAX_FRAMES:
        code = f.f_code
        fn = code.co_filename
        if not (fn.startswith(_PKG_DIR) or fn.startswith(_REDIS_DIR)) or frames:
            frames.append((fn, f.f_lineno, code.co_name))
        f = f.f_back
    return tuple(frames)


def format_stack(stack: Stack) -> str:
    """Render a captured stack like a traceback, outermost call first."""
    lines = []
    for fn, lineno, name in reversed(stack):
        lines.append(f'  File "{fn}", line {lineno}, in {name}')
        src = linecache.getline(fn, lineno).strip()
        if src:
            lines.append(f"    {src}")
    return "\n".join(lines) if lines else "  (no Python frames)"


# ------------------------------------------------------------ pool-per-request


def note_pool_created(pool: Any) -> None:
    """Hook: call once at the end of every pool's ``__init__``.

    Counts pool objects per endpoint and warns once per endpoint when the
    count reaches ``pool_warn_threshold``; also enables leak tracking if the
    pool has a ``leak_threshold`` attribute.
    """
    global _leak_on
    if getattr(pool, "leak_threshold", None):
        _leak_on = True
    threshold = _pool_warn_threshold
    if threshold is None:
        return
    label = endpoint_label(pool)
    stack = _capture(1)
    with _lock:
        if label not in _pools_created:
            _forget_oldest(_pools_created)
            _forget_oldest(_pool_sites)
            _warned.intersection_update(_pools_created)
        count = _pools_created.get(label, 0) + 1
        _pools_created[label] = count
        sites = _pool_sites.setdefault(label, collections.Counter())
        if stack in sites or len(sites) < _MAX_SITES:
            sites[stack] += 1
        fire = count >= threshold and label not in _warned
        if fire:
            _warned.add(label)
            top = sites.most_common(2)
    if fire:
        _warn_pool_per_request(label, count, top)


def _forget_oldest(table: Dict[str, Any]) -> None:
    """Make room for one more label in a per-endpoint table, dropping the
    oldest: a process that meets endpoints without end (a cluster's nodes
    coming and going) must not grow it without bound."""
    while len(table) >= _MAX_ENDPOINTS:
        del table[next(iter(table))]


def _warn_pool_per_request(label: str, count: int, top: List[Tuple[Stack, int]]) -> None:
    where = []
    for stack, n in top:
        where.append(f"{n} of them created at:\n{format_stack(stack)}")
    msg = (
        f"{count} connection pools were created for {label} in this process. "
        "A pool per request (or per client object) defeats connection reuse: "
        "create one pool at startup and share it, or raise "
        "redis_safepool.observe.configure(pool_warn_threshold=...).\n" + "\n".join(where)
    )
    logger.warning(msg)
    stack = top[0][0] if top else ()
    if stack:
        fn, lineno, _ = stack[0]
        module = os.path.splitext(os.path.basename(fn))[0]
        warnings.warn_explicit(msg, PoolPerRequestWarning, fn, lineno, module=module)
    else:
        warnings.warn(msg, PoolPerRequestWarning, stacklevel=3)


def pools_created() -> Dict[str, int]:
    """Pool objects created per endpoint label since start (or ``reset()``)."""
    with _lock:
        return dict(_pools_created)


# ---------------------------------------------------------------------- leaks


def note_checkout(pool: Any, conn: Any) -> None:
    """Hook: call after a connection is handed out. One flag test when leak tracking is off."""
    if not _leak_on:
        return
    threshold = getattr(pool, "leak_threshold", None) or _leak_threshold
    if not threshold:
        return
    _held[id(conn)] = _Held(endpoint_label(pool), time.monotonic(), _capture(1), float(threshold))
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
    if _leak_threshold:
        thresholds.append(_leak_threshold)
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


# ------------------------------------------------------------------- failures


def note_acquire_failed(pool: Any, exc: BaseException) -> None:
    """Hook: call just before ``get_connection()`` raises; ``explain()`` shows the last one."""
    label = endpoint_label(pool)
    message = scrub(str(exc), secrets_of(getattr(pool, "connection_kwargs", None)))
    with _lock:
        if label not in _failures:
            _forget_oldest(_failures)
        _failures[label] = {
            "time": time.time(),
            "error": type(exc).__name__,
            "message": message,
            "thread": threading.current_thread().name,
        }


def last_failures() -> Dict[str, Dict[str, Any]]:
    """The last acquire failure per endpoint label."""
    return dict(_failures)


def explain(*args: Any, **kwargs: Any) -> str:
    """Text explaining limits, states and the last acquire failure (see ``report.explain``)."""
    from .report import explain as _explain

    return _explain(*args, **kwargs)


def leak_tracking() -> bool:
    """Whether a process-wide leak threshold is set (pools made from now on are tracked)."""
    return bool(_leak_threshold)
