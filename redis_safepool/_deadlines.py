"""asyncio wait deadlines kept in arrival order, with one loop timer per line instead of one per waiter."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable, Deque, Optional, Tuple


class DeadlineLine:
    """The waiters of one pool on one event loop that share one timeout.

    They queue FIFO and all wait ``timeout`` seconds, so their deadlines come
    in the order they joined: the oldest pending one is the next to expire.
    The line keeps a single ``loop.call_at`` timer for it, so the loop's
    timer heap holds one entry per line however many tasks wait (a timer per
    waiter is a heap of 10,000 entries that every hand-over pays log n on).

    Served and cancelled waiters are not searched for (their futures are
    done): the head is pruned whenever a waiter joins or settles and when the
    timer fires, and waiters are served in the order they joined, so the line
    holds about the waiters still pending. Only the loop's thread uses a line.
    """

    __slots__ = ("_timeout", "_expire", "_entries", "_timer")

    def __init__(self, timeout: float, expire: Callable[[asyncio.Future, float], None]) -> None:
        # The loop is taken from the futures: a line never keeps its loop alive.
        self._timeout = timeout
        self._expire = expire  # expire(future, loop time it started waiting)
        self._entries: Deque[Tuple[float, asyncio.Future]] = deque()
        self._timer: Optional[asyncio.TimerHandle] = None

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, fut: asyncio.Future) -> None:
        """``fut`` starts waiting now; it fails through ``expire`` unless done by its deadline."""
        entries = self._entries
        while entries and entries[0][1].done():
            entries.popleft()
        loop = fut.get_loop()
        deadline = loop.time() + self._timeout
        entries.append((deadline, fut))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._fire, deadline)

    def settled(self) -> None:
        """A waiter's future is done: drop the done ones from the head."""
        entries = self._entries
        while entries and entries[0][1].done():
            entries.popleft()

    def _fire(self, when: float) -> None:
        self._timer = None
        entries = self._entries
        # The loop runs a timer up to its clock resolution early: what it ran
        # this one for is due, and so is everything older.
        due = None
        try:
            while entries:
                deadline, fut = entries[0]
                if not fut.done():
                    if due is None:
                        due = max(when, fut.get_loop().time())
                    if deadline > due:
                        break
                entries.popleft()
                if not fut.done():
                    self._expire(fut, deadline - self._timeout)
        finally:
            # even if one expiry raised: the waiters behind it keep their deadlines
            if entries:
                deadline, fut = entries[0]
                self._timer = fut.get_loop().call_at(deadline, self._fire, deadline)

    def close(self) -> None:
        """Forget the line (its loop is gone): no timer stays behind."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._entries.clear()
