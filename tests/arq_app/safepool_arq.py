"""An arq worker on the safe pool for tests/test_arq.py (server URL and budget from the environment)."""

import os

from arq.connections import ArqRedis

from redis_safepool.asyncio import SafeConnectionPool

NAME = "safepool-arq"


async def double(ctx, i):
    redis = ctx["redis"]
    await redis.incr("safepool-arq:runs")  # a command of the job's own, on the worker's pool
    pool = redis.connection_pool
    return {"value": 2 * i, "pool": f"{type(pool).__module__}.{type(pool).__qualname__}",
            "total": pool.stats()["total"], "pid": os.getpid()}


class WorkerSettings:
    functions = [double]
    max_jobs = 10  # more jobs at once than the budget has connections
    redis_pool = ArqRedis(SafeConnectionPool.from_url(
        os.environ["SAFEPOOL_TEST_ARQ_URL"], max_connections=int(os.environ["SAFEPOOL_TEST_ARQ_BUDGET"]),
        timeout=10, client_name=NAME))
