"""Durations given to the pools, configure(), checker_config() and observe: one check, one wording."""

from __future__ import annotations

import math
from typing import Any, Literal, Optional, overload

__all__ = ["check_seconds"]

_FOREVER: Any = object()


@overload
def check_seconds(name: str, value: Any, allow_none: Literal[False], forever: float = ...) -> float: ...
@overload
def check_seconds(name: str, value: Any, allow_none: bool, forever: Any = ...) -> Optional[float]: ...
def check_seconds(name: str, value: Any, allow_none: bool, forever: Any = _FOREVER) -> Optional[float]:
    """A duration in seconds: a real number >= 0 (not bool, not nan).

    Infinity means "never ends": it is returned as ``forever`` (None when
    ``allow_none`` and no ``forever`` is given), or rejected when neither is.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__} ({value!r})")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
    if math.isinf(value):
        if forever is not _FOREVER:
            return forever
        if allow_none:
            return None
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    return float(value)
