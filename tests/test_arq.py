"""An arq worker process on the asyncio safe pool against a real redis-server: every job runs,
ten at a time on a budget of two. arq pins redis<6, so this runs where redis-py 5 is installed
(packaging.mk's redis-py 5.2 job) and is skipped elsewhere."""

import asyncio
import os
import pathlib
import subprocess
import sys

import pytest
from process_clients import PeakClients

arq = pytest.importorskip("arq")

from arq.connections import ArqRedis  # noqa: E402
from arq.jobs import Job  # noqa: E402

from redis_safepool.asyncio import SafeConnectionPool  # noqa: E402

APP_DIR = pathlib.Path(__file__).with_name("arq_app")
BUDGET = 2
JOBS = 30
NAME = "safepool-arq"
SAFE_POOL = f"{SafeConnectionPool.__module__}.{SafeConnectionPool.__qualname__}"


def test_arq_worker_runs_every_job_within_the_budget(redis_server):
    env = dict(os.environ, SAFEPOOL_TEST_ARQ_URL=redis_server.url,
               SAFEPOOL_TEST_ARQ_BUDGET=str(BUDGET))
    env["PYTHONPATH"] = os.pathsep.join(
        [str(APP_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])

    async def enqueue():
        redis = ArqRedis(SafeConnectionPool.from_url(redis_server.url, max_connections=BUDGET))
        try:
            return [(await redis.enqueue_job("double", i)).job_id for i in range(JOBS)]
        finally:
            await redis.aclose(close_connection_pool=True)

    async def results(ids):
        redis = ArqRedis(SafeConnectionPool.from_url(redis_server.url, max_connections=BUDGET))
        try:
            return [await Job(job_id, redis).result(timeout=10) for job_id in ids]
        finally:
            await redis.aclose(close_connection_pool=True)

    ids = asyncio.run(enqueue())
    peak = PeakClients(redis_server, NAME)
    log = open(os.path.join(redis_server.dir, "arq.log"), "w+")
    worker = subprocess.Popen([sys.executable, "-m", "arq", "safepool_arq.WorkerSettings", "--burst"],
                              cwd=str(APP_DIR), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert worker.wait(60) == 0, open(log.name).read()[-2000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    assert 1 <= peak.close() <= BUDGET
    got = asyncio.run(results(ids))
    assert sorted(r["value"] for r in got) == [2 * i for i in range(JOBS)]
    assert {r["pool"] for r in got} == {SAFE_POOL}
    assert max(r["total"] for r in got) <= BUDGET
    assert redis_server.command("GET", "safepool-arq:runs").split() == [b"$2", str(JOBS).encode()]
