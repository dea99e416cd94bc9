"""RQ's own processes on the safe pool: ``rq worker-pool`` children and RQ's scheduler rebuild
their clients from ``--connection-class redis_safepool.rq.Redis`` on the safe pool, within the
budget, and the workers carry on after a redis-server restart."""

import datetime
import os
import pathlib
import signal
import subprocess
import sys

import redis
import rq
from process_clients import BudgetWatch

import redis_safepool as sp
from redis_safepool.rq import Redis

APP_DIR = pathlib.Path(__file__).with_name("rq_app")
BUDGET = 3  # per process: a worker's pubsub connection, its commands, its scheduler's
WORKERS = 2
JOBS = 10
SAFE_POOL = f"{sp.SafeConnectionPool.__module__}.{sp.SafeConnectionPool.__qualname__}"


def test_scheduler_and_pool_children_rebuild_a_safe_pool(server_url):
    parent = Redis.from_url(f"{server_url}?max_connections={BUDGET}")
    assert isinstance(parent.connection_pool, sp.SafeConnectionPool)
    # what RQ's scheduler does to get its own client
    scheduler = rq.scheduler.RQScheduler(["default"], connection=parent)
    pool = scheduler.connection.connection_pool
    assert isinstance(pool, sp.SafeConnectionPool) and pool is not parent.connection_pool
    assert pool.endpoint == parent.connection_pool.endpoint
    assert pool.max_connections == BUDGET
    assert scheduler.connection.ping()
    # what rq.worker_pool.run_worker does in each child, from rq's own parse of the client
    cls, connection_class, kwargs = rq.connections.parse_connection(parent)
    child = cls(connection_pool=redis.ConnectionPool(connection_class=connection_class, **kwargs))
    assert isinstance(child.connection_pool, sp.SafeConnectionPool)
    assert child.connection_pool.max_connections == BUDGET
    for client in (scheduler.connection, child, parent):
        client.close()


def test_a_plain_pool_given_explicitly_keeps_its_budget(server_url):
    client = Redis(connection_pool=redis.BlockingConnectionPool.from_url(
        server_url, max_connections=2, timeout=0.5))
    assert isinstance(client.connection_pool, sp.SafeConnectionPool)
    assert client.connection_pool.requested_max_connections == 2
    assert client.connection_pool.timeout == 0.5
    by_kwargs = Redis(host="127.0.0.1", port=int(server_url.rsplit(":", 1)[1].split("/")[0]))
    assert isinstance(by_kwargs.connection_pool, sp.SafeConnectionPool)
    assert by_kwargs.ping()
    client.close()
    by_kwargs.close()


def test_rq_worker_pool_with_scheduler_bounded_and_survives_restart(persistent_server,
                                                                    wait_until):
    url = f"{persistent_server.url}?max_connections={BUDGET}"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(APP_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    sys.path.insert(0, str(APP_DIR))
    try:
        import safepool_jobs
    finally:
        sys.path.remove(str(APP_DIR))
    connection = redis.Redis.from_url(persistent_server.url)  # the test's own, plain client
    queue = rq.Queue("safepool", connection=connection)
    first = [queue.enqueue(safepool_jobs.describe, i) for i in range(JOBS)]
    # only RQ's scheduler moves a scheduled job to its queue
    due = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    scheduled = [queue.enqueue_at(due, safepool_jobs.describe, 100 + i) for i in range(2)]

    log = open(os.path.join(persistent_server.dir, "rq.log"), "w+")
    workers = subprocess.Popen(
        [sys.executable, "-m", "rq.cli", "worker-pool", "safepool", "-n", str(WORKERS),
         "--url", url, "--connection-class", "redis_safepool.rq.Redis"],
        cwd=str(APP_DIR), env=env, stdout=log, stderr=subprocess.STDOUT)
    watch = BudgetWatch(persistent_server, workers.pid, deadline=60)
    try:
        def done(jobs):
            return all(job.get_status(refresh=True) == rq.job.JobStatus.FINISHED for job in jobs)

        wait_until(lambda: done(first + scheduled), timeout=30, what="the first jobs")
        persistent_server.restart()
        second = [_retry(lambda: queue.enqueue(safepool_jobs.describe, i), wait_until)
                  for i in range(JOBS, 2 * JOBS)]
        wait_until(lambda: _retry(lambda: done(second), wait_until), timeout=30,
                   what="the jobs enqueued after the restart")
        results = [job.return_value() for job in first + scheduled + second]
        assert sorted(r["value"] for r in results) == sorted(
            [2 * i for i in range(2 * JOBS)] + [200, 202])
        assert {r["pool"] for r in results} == {SAFE_POOL}
        assert {r["max_connections"] for r in results} == {BUDGET}
        assert workers.pid not in {r["worker_pid"] for r in results}  # pool children ran them
        watch.close()
        assert watch.samples > 0 and watch.max_seen, "no connection was ever sampled"
        for (pid, _db), n in watch.max_seen.items():
            assert n <= BUDGET, f"process {pid} held {n} connections (budget {BUDGET})"
        assert workers.poll() is None, "the worker pool died"
    finally:
        watch.close()
        workers.send_signal(signal.SIGTERM)
        try:
            workers.wait(20)
        except subprocess.TimeoutExpired:
            workers.kill()
            workers.wait(10)
        connection.close()


def _retry(fn, wait_until):
    """``fn()`` until it stops raising a connection error (just after the restart)."""
    def attempt():
        try:
            return (fn(),)
        except redis.exceptions.ConnectionError:
            return None
    return wait_until(attempt, timeout=20, what="the server back")[0]
