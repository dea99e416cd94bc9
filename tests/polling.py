"""Bounded polling shared by the sync and asyncio test helpers: a predicate, a deadline, a clear failure."""

from __future__ import annotations

import time
from typing import Callable, Generator

import pytest


def polls(predicate: Callable[[], object], what: str,
          timeout: float) -> Generator[None, None, object]:
    """Yield between calls of ``predicate`` until it is truthy (the generator's return value);
    fail the test after ``timeout`` s. The caller sleeps its own way at each yield."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        yield
