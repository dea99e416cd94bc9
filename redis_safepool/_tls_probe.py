"""PINGs TLS endpoints through the pools' own idle connections: the C checker cannot speak TLS."""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any, Optional

from . import _core

_lock = threading.Lock()
_pools: "weakref.WeakSet[Any]" = weakref.WeakSet()  # guarded by _lock
_pid = 0


def watch(pool: Any) -> None:
    """Health-check ``pool``'s endpoint through its idle connections from now on."""
    global _pid
    with _lock:
        _pools.add(pool)
        if _pid != os.getpid():  # again in a forked child
            _pid = os.getpid()
            threading.Thread(target=_run, name="redis-safepool-tls-probe", daemon=True).start()


def probe_once(pool: Any, timeout: Optional[float] = None) -> bool:
    """PING through the oldest idle connection of ``pool``; False when none was free.

    A failure is reported to the endpoint as a request thread's would be:
    ``LOADING`` pauses it, a dead socket asks the checker for a probe. The
    connection is taken only while the endpoint is ready and nobody waits,
    and the reply must come within ``timeout`` (default: the checker's
    ``probe_timeout``).
    """
    conn = pool._take_idle()
    if conn is None:
        return False
    try:
        sock = getattr(conn, "_sock", None)
        saved = sock.gettimeout() if sock is not None else None
        if sock is not None:
            sock.settimeout(timeout if timeout is not None
                            else _core.checker_config()["probe_timeout"])
        conn.send_command("PING")
        conn.read_response()
        if sock is not None:
            sock.settimeout(saved)
    except Exception as exc:  # any failure is news about the server
        pool._report_exception(exc)
        conn.disconnect()
    finally:
        pool.release(conn)
    return True


def _run() -> None:
    while _pid == os.getpid():
        config = _core.checker_config()
        time.sleep(config["interval"])
        if not config["enabled"]:
            continue
        with _lock:
            pools = list(_pools)
        done = set()
        for pool in pools:  # one PING per endpoint and interval
            if pool._closed or pool.endpoint in done:
                continue
            try:
                if probe_once(pool, config["probe_timeout"]):
                    done.add(pool.endpoint)
            except Exception:  # a pool closed under us: skip it this round
                continue
