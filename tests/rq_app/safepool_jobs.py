"""RQ jobs for tests/test_rq.py: each says which pool its worker's client is on."""

import os

import rq


def describe(i):
    pool = rq.get_current_job().connection.connection_pool
    return {"value": 2 * i, "pool": f"{type(pool).__module__}.{type(pool).__qualname__}",
            "max_connections": pool.max_connections, "worker_pid": os.getppid()}
