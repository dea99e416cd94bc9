"""A user's script of the public API; `mypy --strict` must pass on it (make typecheck)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Dict

import redis
import redis.asyncio

import redis_safepool
import redis_safepool.asyncio
from redis_safepool import (
    BlockingSafeConnectionPool,
    PoolTimeoutError,
    SafeConnectionPool,
    ServerUnavailableError,
)

if sys.version_info >= (3, 11):
    from typing import assert_type
else:  # pragma: no cover - the check runs with --python-version 3.11
    def assert_type(value: Any, _type: Any) -> Any:
        return value

URL = "redis://127.0.0.1:6379/0"


class MyPool(SafeConnectionPool):
    """A user's subclass: from_url() builds one of these."""


def sync_use() -> int:
    pool = SafeConnectionPool.from_url(URL, max_connections=8, timeout=0.5)
    assert_type(pool, SafeConnectionPool)
    assert_type(MyPool.from_url(URL), MyPool)
    assert_type(BlockingSafeConnectionPool.from_url(URL), SafeConnectionPool)
    client: redis.Redis = redis.Redis(connection_pool=pool)
    try:
        client.set("k", "v")
    except PoolTimeoutError as exc:
        assert isinstance(exc, redis.exceptions.MaxConnectionsError)
    except ServerUnavailableError as exc:
        assert isinstance(exc, redis.exceptions.ConnectionError)
    counters: Dict[str, Any] = pool.stats()
    everywhere: Dict[str, Dict[str, Any]] = redis_safepool.stats()
    redis_safepool.configure(URL, max_connections=16)
    redis_safepool.checker_config(interval=0.5)
    endpoint = pool.endpoint
    assert_type(pool.max_connections, int)
    pool.close()
    return int(counters["in_use"]) + len(everywhere) + len(endpoint or "")


async def async_use() -> None:
    pool = redis_safepool.asyncio.SafeConnectionPool.from_url(URL, max_connections=8)
    assert_type(pool, redis_safepool.asyncio.SafeConnectionPool)
    client = redis.asyncio.Redis(connection_pool=pool)
    await client.set("k", "v")
    connection = await pool.get_connection()
    await pool.release(connection)
    await pool.aclose()


if __name__ == "__main__":
    sync_use()
    asyncio.run(async_use())
