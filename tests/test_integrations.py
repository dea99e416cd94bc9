"""Job libraries on the safe pool, each with its own worker against a real redis-server."""

import operator

import redis
import rq


def test_rq_forking_worker(server_url, make_pool):
    pool = make_pool(server_url, max_connections=4, timeout=5)
    connection = redis.Redis(connection_pool=pool)
    queue = rq.Queue(connection=connection)
    jobs = [queue.enqueue(operator.add, i, i) for i in range(20)]
    worker = rq.Worker([queue], connection=connection)  # forks a work horse per job
    assert worker.work(burst=True)
    assert [job.return_value() for job in jobs] == [2 * i for i in range(20)]
    assert worker.connection.connection_pool is pool
    assert pool.stats()["in_use"] == 0 and pool.stats()["total"] <= 4
