"""A real Celery prefork worker on the safe pool survives a redis-server restart within its budgets."""

import gc
import os
import pathlib
import subprocess
import sys

import pytest
from process_clients import BudgetWatch, process_tree

import redis_safepool as sp

APP_DIR = pathlib.Path(__file__).with_name("celery_app")
TASKS = 200
BROKER_BUDGET = 10
BACKEND_BUDGET = 4
WORKER_DEADLINE = 120  # seconds the whole run may take before the test fails


def test_prefork_worker_survives_restart_within_budget(persistent_server, wait_until,
                                                       monkeypatch):
    broker_url = persistent_server.url
    backend_url = broker_url.rsplit("/", 1)[0] + "/1"
    env = dict(os.environ,
               SAFEPOOL_TEST_BROKER=broker_url, SAFEPOOL_TEST_BACKEND=backend_url,
               SAFEPOOL_TEST_BROKER_BUDGET=str(BROKER_BUDGET),
               SAFEPOOL_TEST_BACKEND_BUDGET=str(BACKEND_BUDGET))
    env["PYTHONPATH"] = os.pathsep.join(
        [str(APP_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    for key in [k for k in env if k.startswith("SAFEPOOL_TEST_")]:
        monkeypatch.setenv(key, env[key])
    sys.path.insert(0, str(APP_DIR))
    try:
        import safepool_tasks
    finally:
        sys.path.remove(str(APP_DIR))

    log = open(os.path.join(persistent_server.dir, "worker.log"), "w+")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "safepool_tasks", "worker", "--pool=prefork",
         "-c", "4", "--loglevel=INFO", "--without-gossip", "--without-mingle",
         "--without-heartbeat"],
        cwd=str(APP_DIR), env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    watch = None
    try:
        first = [safepool_tasks.double.delay(i) for i in range(TASKS // 2)]
        wait_until(lambda: len(process_tree(worker.pid)) >= 5, timeout=60,
                   what="the worker and its 4 children")
        watch = BudgetWatch(persistent_server, worker.pid)
        wait_until(lambda: sum(r.ready() for r in first[:40]) >= 20, timeout=60,
                   what="the first results")
        # Once the worker has taken (and recorded as unacked) every queued message, some
        # running, some reserved, SIGKILL the server and start it again. (Not while a BRPOP
        # reply is in flight: kombu's redis transport loses a message popped from the queue
        # but not yet recorded as unacked, whatever the pool.)
        first_ids = {r.id for r in first}

        def all_received() -> bool:
            log.flush()
            with open(log.name, errors="replace") as f:
                seen = {line.split("[", 2)[2].split("]")[0] for line in f
                        if "] received" in line and line.count("[") >= 2}
            return first_ids <= seen

        wait_until(all_received, timeout=60, what="the worker to receive the first batch")
        persistent_server.restart()
        rest = [safepool_tasks.double.delay(i) for i in range(TASKS // 2, TASKS)]
        results = {}
        pending = first + rest

        def collect() -> bool:
            for r in list(pending):
                if r.ready():
                    results[r.id] = r.get(timeout=5)
                    pending.remove(r)
            return not pending

        try:
            wait_until(collect, timeout=WORKER_DEADLINE, what="every task's result")
        except BaseException:
            print("missing:", [(r.id, r.state) for r in pending][:10],
                  persistent_server.command("LLEN", "celery"),
                  persistent_server.command("HLEN", "unacked"))
            raise
        assert sorted(v["value"] for v in results.values()) == [2 * i for i in range(TASKS)]
        children = {v["pid"] for v in results.values()}
        assert worker.pid not in children and len(children) >= 2, children
        assert all(v["backend_total"] <= BACKEND_BUDGET for v in results.values())
        watch.close()
        assert watch.samples > 0 and watch.max_seen, "no connection was ever sampled"
        for (pid, db), n in watch.max_seen.items():
            budget = BROKER_BUDGET if db == 0 else BACKEND_BUDGET
            assert n <= budget, f"process {pid} held {n} connections on db {db} (budget {budget})"
        assert worker.poll() is None, "the worker died"
        del first, rest, pending
    finally:
        if watch is not None:
            watch.close()
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
        log.seek(0)
        output = log.read()
        log.close()
        print(output[-6000:])
        gc.collect()  # the results unsubscribe while the server is still up
        safepool_tasks.app.close()
        for pool_owner in (safepool_tasks.app.backend,):
            pool_owner.client.connection_pool.close()
    assert sp.stats()  # the test process's own pools were on the safe pool too
