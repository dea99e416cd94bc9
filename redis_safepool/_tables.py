"""What the observability hooks share: bounded per-endpoint tables and cheap captured stacks."""

from __future__ import annotations

import linecache
import os
import sys
from types import FrameType
from typing import Any, Dict, List, Optional, Tuple

MAX_ENDPOINTS = 256  # endpoint labels remembered per table; the oldest go first
MAX_FRAMES = 12  # frames kept per stack

Frame = Tuple[str, int, str]
Stack = Tuple[Frame, ...]

_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
try:
    import redis as _redis

    _REDIS_DIR = os.path.dirname(os.path.abspath(_redis.__file__)) + os.sep
except Exception:  # pragma: no cover - redis is a hard dependency
    _REDIS_DIR = _PKG_DIR


def forget_oldest(table: Dict[str, Any]) -> None:
    """Make room for one more label in a per-endpoint table, dropping the
    oldest: a process that meets endpoints without end (a cluster's nodes
    coming and going) must not grow it without bound."""
    while len(table) >= MAX_ENDPOINTS:
        del table[next(iter(table))]


def capture(skip: int) -> Stack:
    """Caller frames (innermost first) outside redis and redis_safepool; raw, no source lookup."""
    try:
        f: Optional[FrameType] = sys._getframe(skip + 1)
    except ValueError:
        return ()
    frames: List[Frame] = []
    while f is not None and len(frames) < MAX_FRAMES:
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
