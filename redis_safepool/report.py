"""Plain-text rendering of pool stats: a table per endpoint and ``explain()`` prose."""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from ._failures import endpoint_label, last_failures

__all__ = ["format_table", "explain", "all_stats"]

COLUMNS = [
    ("endpoint", "endpoint"),
    ("state", "state"),
    ("max", "max_connections"),
    ("in_use", "in_use"),
    ("idle", "idle"),
    ("conn", "connecting"),
    ("waiters", "waiters"),
    ("pools", "pools"),
    ("created", "created"),
    ("closed", "closed"),
    ("waits", "waits"),
    ("timeouts", "timeouts"),
    ("refused", "refused_by_state"),
    ("last_error", "last_error"),
]


def all_stats() -> Dict[str, Dict[str, Any]]:
    """``redis_safepool.stats()``, or ``{}`` while the core is not built."""
    try:
        from . import _core
    except ImportError:
        return {}
    return _core.stats()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_table(stats: Optional[Dict[str, Dict[str, Any]]] = None) -> str:
    """One row per endpoint with the main counters, aligned in columns."""
    stats = all_stats() if stats is None else stats
    if not stats:
        return "no redis-safepool endpoints in this process"
    rows: List[List[str]] = [[h for h, _ in COLUMNS]]
    for label in sorted(stats):
        st = dict(stats[label])
        st.setdefault("endpoint", label)
        rows.append([_cell(st.get(key)) for _, key in COLUMNS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ago(epoch: Any) -> str:
    if not isinstance(epoch, (int, float)) or epoch <= 0:
        return ""
    stamp = time.strftime("%H:%M:%S", time.localtime(epoch))
    return f"{stamp} ({max(0.0, time.time() - epoch):.1f}s ago)"


def _why(st: Dict[str, Any], failure: Optional[Dict[str, Any]]) -> str:
    state = st.get("state")
    if state and state != "ready":
        reason = st.get("state_reason") or st.get("last_error") or "no reason recorded"
        return (f"the endpoint is {state} ({reason}); get_connection() fails fast with "
                "ServerUnavailableError until the health checker sees the server ready again")
    if failure and failure.get("error") == "PoolTimeoutError" or (st.get("timeouts") or 0) > 0:
        return (f"all {st.get('max_connections')} connections of the budget were in use and "
                f"callers waited past the pool timeout; raise max_connections "
                "(redis_safepool.configure) or hold connections for a shorter time")
    if failure:
        return f"{failure.get('error')}: {failure.get('message')}"
    return "no acquire has failed"


def _explain_one(label: str, st: Dict[str, Any], pool: Any, failure: Optional[Dict[str, Any]]) -> str:
    out = [label]
    limits = f"max_connections={st.get('max_connections')} (process-wide budget, {st.get('pools')} live pools)"
    if pool is not None:
        limits += f"; this pool: timeout={getattr(pool, 'timeout', '?')}s"
        if "pool_in_use" in st:
            limits += f", in use by it={st['pool_in_use']}"
    out.append(f"  limits:  {limits}")
    out.append(f"  usage:   in use {st.get('in_use')}, idle {st.get('idle')}, connecting "
               f"{st.get('connecting')}, waiters {st.get('waiters')}; created {st.get('created')}, "
               f"closed {st.get('closed')}")
    state = f"{st.get('state')} since {_ago(st.get('state_since')) or '?'}"
    if st.get("state_reason"):
        state += f": {st['state_reason']}"
    out.append(f"  state:   {state}; {st.get('transitions')} transitions, generation {st.get('generation')}")
    wt, wm = st.get("wait_time_total"), st.get("wait_time_max")
    out.append(f"  waits:   {st.get('waits')} waits ({_cell(wt)}s total, {_cell(wm)}s max), "
               f"{st.get('timeouts')} timeouts, {st.get('refused_by_state')} refused by state")
    out.append(f"  health:  {st.get('probes')} probes, {st.get('probe_failures')} failed, "
               f"{st.get('dead_idle_closed')} dead idle connections closed, "
               f"{st.get('peer_hangups')} hangups by the server; last error: "
               f"{st.get('last_error') or '-'}")
    if failure:
        out.append(f"  last acquire failure: {failure['error']} at {_ago(failure['time'])} in "
                   f"thread {failure['thread']}: {failure['message']}")
    out.append(f"  why:     {_why(st, failure)}")
    return "\n".join(out)


def explain(target: Any = None, stats: Optional[Dict[str, Dict[str, Any]]] = None) -> str:
    """Explain the configuration in force: limits, states and why the last acquire failed.

    ``target``: a pool, an endpoint label, or None for every endpoint.
    """
    failures = last_failures()
    pool = None
    if target is not None and not isinstance(target, str):
        pool = target
        label = endpoint_label(pool)
        st_fn = getattr(pool, "stats", None)
        stats = {label: st_fn()} if st_fn is not None else {label: {}}
    else:
        stats = all_stats() if stats is None else stats
        if target is not None:
            stats = {k: v for k, v in stats.items() if k == target}
    if not stats:
        return "no redis-safepool endpoints in this process" + (f" matching {target}" if target else "")
    return "\n\n".join(
        _explain_one(label, stats[label], pool, failures.get(label)) for label in sorted(stats)
    )
