"""Helpers shared by the Sentinel and Cluster integrations: jittered backoff and single-flight calls."""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable, Dict, Hashable, Optional

__all__ = ["Backoff", "SingleFlight"]


class Backoff:
    """Per-key exponential backoff with "equal jitter": after the n-th consecutive
    failure a key is blocked for ``min(cap, base * 2**(n-1)) * uniform(0.5, 1)``
    seconds. A success clears the key. Thread-safe; never sleeps."""

    def __init__(self, base: float = 0.05, cap: float = 2.0) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._lock = threading.Lock()
        self._state: Dict[Hashable, list] = {}  # key -> [failures, blocked_until]

    def ready(self, key: Hashable, now: Optional[float] = None) -> bool:
        """True if ``key`` may be tried now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            state = self._state.get(key)
            return state is None or now >= state[1]

    def remaining(self, key: Hashable) -> float:
        """Seconds until ``key`` may be tried again (0 if it may be tried now)."""
        with self._lock:
            state = self._state.get(key)
            return 0.0 if state is None else max(0.0, state[1] - time.monotonic())

    def claim(self, key: Hashable) -> bool:
        """May the caller try ``key`` now? A healthy key: always. A failing key:
        only once its delay is over, and then only one caller (a half-open
        trial) until that caller reports ``failed``/``succeeded``."""
        now = time.monotonic()
        with self._lock:
            state = self._state.get(key)
            if state is None:
                return True
            if now < state[1]:
                return False
            state[1] = now + self.cap  # the trial's outcome re-arms or clears this
            return True

    def failed(self, key: Hashable) -> float:
        """Record a failure; returns the delay chosen for ``key``."""
        with self._lock:
            state = self._state.setdefault(key, [0, 0.0])
            state[0] += 1
            delay = min(self.cap, self.base * (2 ** min(state[0] - 1, 30)))
            delay *= random.uniform(0.5, 1.0)
            state[1] = time.monotonic() + delay
            return delay

    def succeeded(self, key: Hashable) -> None:
        with self._lock:
            self._state.pop(key, None)

    def failures(self, key: Hashable) -> int:
        with self._lock:
            state = self._state.get(key)
            return 0 if state is None else state[0]


class _Flight:
    __slots__ = ("lock", "started", "completed", "result", "error")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = 0
        self.completed = 0
        self.result: Any = None
        self.error: Optional[BaseException] = None


class SingleFlight:
    """Coalesce concurrent calls per key: a caller that waited while another
    caller's call ran (and that call started after the waiter arrived) takes its
    outcome instead of calling again. At most one call per key runs at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: Dict[Hashable, _Flight] = {}

    def do(self, key: Hashable, fn: Callable[[], Any],
           clone_error: Callable[[BaseException], BaseException] = lambda e: e) -> Any:
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = _Flight()
            arrived = flight.started
        with flight.lock:
            if flight.completed > arrived:
                if flight.error is not None:
                    raise clone_error(flight.error)
                return flight.result
            flight.started += 1
            try:
                flight.result = fn()
                flight.error = None
                return flight.result
            except Exception as exc:
                flight.error = exc
                flight.result = None
                raise
            finally:
                flight.completed += 1
