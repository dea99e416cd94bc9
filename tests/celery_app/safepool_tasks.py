"""A Celery app on the safe pool (broker and result backend), for the prefork worker test."""

import os
import time

from celery import Celery

import redis_safepool as sp

BROKER_URL = os.environ["SAFEPOOL_TEST_BROKER"]
BACKEND_URL = os.environ["SAFEPOOL_TEST_BACKEND"]
BROKER_BUDGET = int(os.environ.get("SAFEPOOL_TEST_BROKER_BUDGET", "10"))
BACKEND_BUDGET = int(os.environ.get("SAFEPOOL_TEST_BACKEND_BUDGET", "4"))

app = Celery("safepool_tasks")
app.conf.update(
    broker_url=BROKER_URL,
    broker_transport="redis_safepool.celery:Transport",
    # reserved messages a restart took from the worker come back within seconds
    broker_transport_options={"max_connections": BROKER_BUDGET, "visibility_timeout": 5,
                              "unacked_restore_interval": 1, "unacked_restore_throttle": 1},
    result_backend="redis_safepool.celery:ResultBackend+" + BACKEND_URL,
    redis_max_connections=BACKEND_BUDGET,
    result_backend_always_retry=True,
    result_backend_max_retries=50,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task
def double(i: int) -> dict:
    time.sleep(0.05)  # a little work, so the restart lands while tasks are running
    backend = sp.stats().get(BACKEND_URL, {})
    return {"value": 2 * i, "pid": os.getpid(), "backend_total": backend.get("total", 0)}
