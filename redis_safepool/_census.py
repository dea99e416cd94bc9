"""The pool-per-request census: pool objects created per endpoint, and one warning naming where."""

from __future__ import annotations

import collections
import logging
import os
import threading
import warnings
from typing import Any, Dict, List, Optional, Tuple

from . import _leaks
from ._failures import endpoint_label
from ._tables import MAX_ENDPOINTS, Stack, capture, forget_oldest, format_stack

logger = logging.getLogger("redis_safepool")

DEFAULT_POOL_WARN_THRESHOLD = 32
MAX_SITES = 16  # distinct creation stacks remembered per endpoint


class PoolPerRequestWarning(RuntimeWarning):
    """The process created an unusual number of pool objects for one endpoint."""


_lock = threading.Lock()
pool_warn_threshold: Optional[int] = DEFAULT_POOL_WARN_THRESHOLD
_pools_created: Dict[str, int] = {}
_pool_sites: Dict[str, "collections.Counter[Stack]"] = {}
_warned: set = set()


def note_pool_created(pool: Any) -> None:
    """Hook: call once at the end of every pool's ``__init__``.

    Counts pool objects per endpoint and warns once per endpoint when the
    count reaches ``pool_warn_threshold``; also enables leak tracking if the
    pool has a ``leak_threshold`` attribute.
    """
    if getattr(pool, "leak_threshold", None):
        _leaks.enable()
    threshold = pool_warn_threshold
    if threshold is None:
        return
    label = endpoint_label(pool)
    stack = capture(1)
    with _lock:
        if label not in _pools_created:
            forget_oldest(_pools_created)
            forget_oldest(_pool_sites)
            _warned.intersection_update(_pools_created)
        count = _pools_created.get(label, 0) + 1
        _pools_created[label] = count
        sites = _pool_sites.setdefault(label, collections.Counter())
        if stack in sites or len(sites) < MAX_SITES:
            sites[stack] += 1
        fire = count >= threshold and label not in _warned
        if fire:
            _warned.add(label)
            top = sites.most_common(2)
    if fire:
        _warn_pool_per_request(label, count, top)




def _warn_pool_per_request(label: str, count: int, top: List[Tuple[Stack, int]]) -> None:
    where = []
    for stack, n in top:
        where.append(f"{n} of them created at:\n{format_stack(stack)}")
    msg = (
        f"{count} connection pools were created for {label} in this process. "
        "A pool per request (or per client object) defeats connection reuse: "
        "create one pool at startup and share it, or raise "
        "redis_safepool.observe.set_thresholds(pool_warn_threshold=...).\n" + "\n".join(where)
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


def reset() -> None:
    global pool_warn_threshold
    with _lock:
        pool_warn_threshold = DEFAULT_POOL_WARN_THRESHOLD
        _pools_created.clear()
        _pool_sites.clear()
        _warned.clear()
