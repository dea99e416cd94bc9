"""asyncio helpers of the tests: a loop that fails instead of hanging, and polling without blocking it."""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import pytest

RUN_LIMIT = 120.0  # upper bound for one test's event loop; a hang fails instead of blocking


def run(coro, limit: float = RUN_LIMIT):
    """Run ``coro`` in a fresh event loop, failing (not hanging) after ``limit`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, limit))


async def until(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> object:
    """Poll ``predicate`` without blocking the loop; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.001)
