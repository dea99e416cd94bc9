"""Cheap observability hooks the pools call, and what they found: the pool-per-request
census, the leak watcher and the last acquire failure, explained by ``explain()``."""

from __future__ import annotations

from typing import Any

from . import _census, _failures, _leaks, report
from ._census import DEFAULT_POOL_WARN_THRESHOLD, PoolPerRequestWarning, note_pool_created, pools_created
from ._checks import check_seconds as _check_seconds
from ._failures import endpoint_label, last_failures, note_acquire_failed
from ._leaks import check_leaks, held, leak_tracking, leaks, note_checkout, note_dropped, note_release
from ._tables import format_stack

__all__ = [
    "PoolPerRequestWarning",
    "DEFAULT_POOL_WARN_THRESHOLD",
    "set_thresholds",
    "configure",
    "reset",
    "note_pool_created",
    "pools_created",
    "note_checkout",
    "note_release",
    "note_dropped",
    "note_acquire_failed",
    "check_leaks",
    "leaks",
    "held",
    "leak_tracking",
    "last_failures",
    "endpoint_label",
    "format_stack",
    "explain",
]

_KEEP: Any = object()


def set_thresholds(pool_warn_threshold: Any = _KEEP, leak_threshold: Any = _KEEP) -> None:
    """Set the hooks' process-wide thresholds; pass None to disable one, omit to keep it.

    ``pool_warn_threshold``: pool objects created for one endpoint before the
    pool-per-request warning (default 32). ``leak_threshold``: seconds a
    connection may stay checked out before it is reported (default off; a
    pool's own ``leak_threshold`` attribute wins over this).
    """
    if pool_warn_threshold is not _KEEP:
        if pool_warn_threshold is not None and (
            isinstance(pool_warn_threshold, bool) or not isinstance(pool_warn_threshold, int)
        ):
            raise TypeError(f"pool_warn_threshold must be an int >= 1 or None, got {pool_warn_threshold!r}")
        if pool_warn_threshold is not None and pool_warn_threshold < 1:
            raise ValueError(f"pool_warn_threshold must be >= 1 or None, got {pool_warn_threshold}")
        _census.pool_warn_threshold = pool_warn_threshold
    if leak_threshold is not _KEEP:
        seconds = _check_seconds("leak_threshold", leak_threshold, allow_none=True)
        if seconds is not None and seconds <= 0:
            raise ValueError(f"leak_threshold must be > 0 seconds or None, got {leak_threshold!r}")
        _leaks.set_threshold(seconds)


# The name this function had first (documented, and used in settings files): it
# sets the hooks' thresholds only; a budget is set by redis_safepool.configure().
configure = set_thresholds


def reset() -> None:
    """Forget every count, warning, held connection and failure (tests, after fork)."""
    _census.reset()
    _leaks.reset()
    _failures.reset()


def explain(target: Any = None, **kwargs: Any) -> str:
    """Text explaining limits, states and the last acquire failure (see ``report.explain``)."""
    return report.explain(target, **kwargs)

