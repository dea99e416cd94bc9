"""asyncio helpers of the tests: a loop that fails instead of hanging, and polling without blocking it."""

from __future__ import annotations

import asyncio
from typing import Callable

from polling import polls

RUN_LIMIT = 120.0  # upper bound for one test's event loop; a hang fails instead of blocking


def run(coro, limit: float = RUN_LIMIT):
    """Run ``coro`` in a fresh event loop, failing (not hanging) after ``limit`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, limit))


async def until(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> object:
    """Poll ``predicate`` without blocking the loop; fail after ``timeout`` s."""
    poll = polls(predicate, what, timeout)
    try:
        while True:
            next(poll)
            await asyncio.sleep(0.001)
    except StopIteration as done:
        return done.value
