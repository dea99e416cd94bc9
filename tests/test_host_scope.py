"""scope="host": one budget per server for every process of the user, with real processes and servers."""

from __future__ import annotations

import multiprocessing
import os
import signal
import stat
import threading
import time
import warnings
from typing import Any, Callable, Dict, List, Tuple

import pytest
import redis

import redis_safepool as sp
from redis_safepool import asyncio as sp_asyncio
from redis_safepool._pool_base import host_segment_name
from redis_safepool._endpoint_keys import endpoint_of

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="host scope is Linux only")


def segment_path(url: str) -> str:
    kwargs = redis.connection.parse_url(url)
    key = endpoint_of(redis.Connection, kwargs)[0]
    return "/dev/shm" + host_segment_name(key)


@pytest.fixture
def host_url(redis_server) -> Any:
    """The fresh server's URL; its host budget's segment is removed afterwards."""
    url = redis_server.url
    yield url
    try:
        os.unlink(segment_path(url))
    except FileNotFoundError:
        pass


class PeakClients:
    """Samples the server's own count of live clients until stopped; keeps the peak."""

    def __init__(self, server) -> None:
        self.server, self.peak, self.samples = server, 0, 0
        self.at_peak = ""  # CLIENT LIST when the peak was seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            n = self.server.live_clients()
            if n > self.peak:
                self.peak = n
                self.at_peak = self.server.command("CLIENT", "LIST").decode(errors="replace")
            self.samples += 1

    def __enter__(self) -> "PeakClients":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


# ---- the surface -------------------------------------------------------------------------


def test_scope_is_validated(host_url, monkeypatch):
    with pytest.raises(ValueError, match="scope must be 'process' or 'host', got 'hots'"):
        sp.SafeConnectionPool.from_url(host_url, scope="hots")
    with pytest.raises(TypeError, match="scope must be 'process' or 'host'"):
        sp.SafeConnectionPool.from_url(host_url, scope=1)
    with pytest.raises(ValueError, match="<= 4096 with scope='host'"):
        sp.SafeConnectionPool.from_url(host_url, scope="host", max_connections=5000)
    monkeypatch.setenv("REDIS_SAFEPOOL_SCOPE", "machine")
    with pytest.raises(ValueError, match="REDIS_SAFEPOOL_SCOPE must be 'process' or 'host'"):
        sp.SafeConnectionPool.from_url(host_url)
    with pytest.raises(ValueError, match="REDIS_SAFEPOOL_SCOPE"):
        sp.configure(host_url, max_connections=3)
    with pytest.raises(ValueError, match="REDIS_SAFEPOOL_SCOPE"):
        sp_asyncio.SafeConnectionPool.from_url(host_url)


def test_stats_show_the_scope_and_the_host(host_url, redis_server, make_pool):
    pool = make_pool(host_url, max_connections=4, scope="host")
    client = redis.Redis(connection_pool=pool)
    client.ping()
    held = pool.get_connection()
    s = pool.stats()
    assert s["scope"] == "host"
    assert s["max_connections"] == 4
    assert s["host_total"] >= 1 and s["host_in_use"] == 1
    assert s["host_processes"] == 1 and s["host_waiting"] == 0
    assert sp.stats()[pool.endpoint]["scope"] == "host"
    view = sp.host_stats(host_url)  # read from the segment, as another process would
    assert view["max_connections"] == 4 and view["in_use"] == 1 and view["processes"] == 1
    # the shared health: nobody published a state yet (ready from the start), nothing recovering
    assert view["state"] == "unknown" and view["connecting"] == 0 and view["probes_skipped"] == 0
    assert s["host_connecting"] == 0 and s["host_max_connecting"] >= 1
    pool.release(held)


def test_process_scope_stats_have_no_host_numbers(server_url, make_pool):
    pool = make_pool(server_url, max_connections=2)
    s = pool.stats()
    assert s["scope"] == "process"
    assert s["host_total"] is None and s["host_processes"] is None


def test_environment_sets_the_default(host_url, monkeypatch, make_pool):
    monkeypatch.setenv("REDIS_SAFEPOOL_SCOPE", "host")
    pool = make_pool(host_url, max_connections=3)
    assert pool.scope == "host" and pool.stats()["scope"] == "host"


def test_segment_is_private_and_names_no_server(host_url, make_pool):
    make_pool(host_url, max_connections=2, scope="host").get_connection()
    path = segment_path(host_url)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    name = os.path.basename(path)
    port = host_url.rsplit(":", 1)[1].split("/")[0]
    assert "127.0.0.1" not in name and port not in name


def test_password_never_in_the_segment(redis_server, make_pool):
    redis_server.command("CONFIG", "SET", "requirepass", "s3cret-host-pw")
    url = f"redis://:s3cret-host-pw@127.0.0.1:{redis_server.port}/0"
    pool = make_pool(url, max_connections=2, scope="host")
    redis.Redis(connection_pool=pool).ping()
    path = segment_path(url)
    try:
        with open(path, "rb") as f:
            assert b"s3cret-host-pw" not in f.read()
        assert "s3cret" not in repr(sp.host_stats(url))
    finally:
        pool.disconnect()
        os.unlink(path)


def test_one_budget_for_sync_and_asyncio_pools(host_url, make_pool):
    import asyncio

    pool = make_pool(host_url, max_connections=2, scope="host")
    a = pool.get_connection()

    async def main() -> None:
        apool = sp_asyncio.SafeConnectionPool.from_url(host_url, max_connections=2, scope="host",
                                                       timeout=0.2)
        conn = await apool.get_connection()
        assert apool.stats()["host_total"] == 2
        with pytest.raises(sp.PoolTimeoutError):
            await apool.get_connection()
        await apool.release(conn)
        await apool.disconnect()

    asyncio.run(main())
    pool.release(a)


def test_configure_sets_a_host_budget(host_url, make_pool):
    sp.configure(host_url, max_connections=3, scope="host")
    pool = make_pool(host_url)
    assert pool.stats()["scope"] == "host" and pool.max_connections == 3
    assert sp.host_stats(host_url)["max_connections"] == 3


def test_scope_conflict_warns(host_url, make_pool):
    make_pool(host_url, max_connections=2)
    with pytest.warns(sp.BudgetConflictWarning, match="scope='process'"):
        pool = make_pool(host_url, max_connections=2, scope="host")
    assert pool.stats()["scope"] == "process"


def test_foreign_segment_falls_back_with_a_warning(host_url, make_pool):
    path = segment_path(host_url)
    with open(path, "wb") as f:
        f.write(b"\xa5" * 4096)
    os.chmod(path, 0o644)
    with pytest.warns(sp.HostScopeWarning, match="mode other than 0600"):
        pool = make_pool(host_url, max_connections=2, scope="host")
    assert pool.stats()["scope"] == "process"
    redis.Redis(connection_pool=pool).ping()  # works, on a budget of its own

    other_db = host_url[: -len("/0")] + "/1"
    other = segment_path(other_db)
    with open(other, "wb") as f:
        f.write(b"\xa5" * 4096)
    os.chmod(other, 0o600)
    try:
        with pytest.warns(sp.HostScopeWarning, match="another layout version"):
            pool2 = make_pool(other_db, max_connections=2, scope="host")
        assert pool2.stats()["scope"] == "process"
    finally:
        os.unlink(other)


# ---- many processes ----------------------------------------------------------------------

THREADS = 8
COMMANDS = 10


def _hammer(url: str, results: Any) -> None:
    import redis
    import redis_safepool as sp

    pool = sp.SafeConnectionPool.from_url(url, max_connections=8, scope="host", timeout=120,
                                          client_name=f"pid{os.getpid()}")
    client = redis.Redis(connection_pool=pool)
    done = [0] * THREADS

    def work(i: int) -> None:
        for _ in range(COMMANDS):
            client.incr("hits")
            done[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    results.put((os.getpid(), sum(done)))
    pool.disconnect()


def _run_processes(server: Any, procs: List[Any], results: Any) -> Tuple[List[Any], PeakClients]:
    """Start ``procs``, take one result from each, join them; the server's peak meanwhile."""
    with PeakClients(server) as peak:
        for p in procs:
            p.start()
        got = [results.get(timeout=180) for _ in procs]
        for p in procs:
            p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    return got, peak


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_sixteen_processes_share_eight_connections(host_url, redis_server, start_method):
    ctx = multiprocessing.get_context(start_method)
    results = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(host_url, results)) for _ in range(16)]
    got, peak = _run_processes(redis_server, procs, results)
    assert sorted(n for _, n in got) == [THREADS * COMMANDS] * 16  # every process did its work
    assert int(redis.Redis.from_url(host_url).get("hits")) == 16 * THREADS * COMMANDS
    assert peak.samples > 0
    assert peak.peak <= 8, (f"the server saw {peak.peak} connections from a budget of 8:\n"
                            f"{peak.at_peak}")


SHARE_THREADS = 8
SHARE_COMMANDS = 100


def _contend(url: str, start: Any, results: Any) -> None:
    import redis
    import redis_safepool as sp

    pool = sp.SafeConnectionPool.from_url(url, max_connections=4, scope="host", timeout=120)
    client = redis.Redis(connection_pool=pool)
    client.ping()  # connected before the race starts, so both are in it together
    start.wait(60)

    def work() -> None:
        for _ in range(SHARE_COMMANDS):
            client.incr("hits")

    threads = [threading.Thread(target=work) for _ in range(SHARE_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    results.put(pool.stats()["created"])
    pool.disconnect()


def test_contended_host_slots_are_shared_out_not_churned(host_url, redis_server):
    # Two processes, eight threads each, on a host budget of 4: both always wait. Each
    # settles on its share (2) and keeps it; giving every connection back whenever the
    # other waits would cost a connect per checkout.
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(host_url, start, results)) for _ in range(2)]
    created, peak = _run_processes(redis_server, procs, results)
    assert int(redis.Redis.from_url(host_url).get("hits")) == 2 * SHARE_THREADS * SHARE_COMMANDS
    assert peak.peak <= 4, peak.at_peak
    assert sum(created) <= 20, f"{sum(created)} connects for {2 * SHARE_THREADS * SHARE_COMMANDS} commands"


def _hold_and_wait(url: str, n: int, ready: Any) -> None:
    import redis_safepool as sp

    pool = sp.SafeConnectionPool.from_url(url, max_connections=3, scope="host", timeout=5)
    held = [pool.get_connection() for _ in range(n)]
    ready.put(len(held))
    time.sleep(600)  # killed long before


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_killed_holder_gives_its_slots_back(host_url, make_pool, wait_until, start_method):
    ctx = multiprocessing.get_context(start_method)
    ready = ctx.Queue()
    child = ctx.Process(target=_hold_and_wait, args=(host_url, 3, ready))
    child.start()
    try:
        assert ready.get(timeout=60) == 3
        pool = make_pool(host_url, max_connections=3, scope="host", timeout=0)
        with pytest.raises(sp.PoolTimeoutError):
            pool.get_connection()  # the child holds all three
        os.kill(child.pid, signal.SIGKILL)
        t0 = time.monotonic()
        pool.timeout = 5.0
        got = [pool.get_connection() for _ in range(3)]
        took = time.monotonic() - t0
        assert len(got) == 3
        assert sp.host_stats(host_url)["reclaimed"] >= 3
        print(f"slots of a killed holder back after {took:.3f}s")
        for conn in got:
            pool.release(conn)
    finally:
        child.kill()
        child.join(10)


def _fork_while_holding(url: str, out: Any) -> None:
    import redis_safepool as sp

    pool = sp.SafeConnectionPool.from_url(url, max_connections=4, scope="host", timeout=0)
    held = [pool.get_connection() for _ in range(3)]
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child_pool = sp.SafeConnectionPool.from_url(url, max_connections=4, scope="host",
                                                        timeout=0)
            s = child_pool.stats()
            one = child_pool.get_connection()  # the one slot the parent left
            try:
                child_pool.get_connection()
                code = 3  # a second one would be over the host budget
            except sp.PoolTimeoutError:
                pass
            if s["total"] != 0 or s["host_total"] != 3:
                code = 4
            child_pool.release(one)
        except BaseException:
            code = 5
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    out.put(os.waitstatus_to_exitcode(status))
    for conn in held:
        pool.release(conn)


def test_forked_child_starts_with_no_slots(host_url):
    ctx = multiprocessing.get_context("spawn")  # a clean process that forks itself
    out = ctx.Queue()
    p = ctx.Process(target=_fork_while_holding, args=(host_url, out))
    p.start()
    assert out.get(timeout=60) == 0
    p.join(30)
    assert p.exitcode == 0


# ---- gunicorn ----------------------------------------------------------------------------

GUNICORN_APP = os.path.join(os.path.dirname(__file__), "gunicorn_app")


def _get(port: int, path: str, timeout: float = 60.0) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
        assert resp.status == 200
        return resp.read().decode()


def _load(port: int, requests: int, concurrency: int = 16) -> List[str]:
    """`requests` GET / through `concurrency` threads; every error is kept."""
    from concurrent.futures import ThreadPoolExecutor

    errors: List[str] = []

    def one(_: int) -> None:
        try:
            _get(port, "/")
        except Exception as exc:  # noqa: BLE001 - every failure is a finding
            errors.append(f"{type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(one, range(requests)))
    return errors


def _holders(server) -> Dict[int, int]:
    """worker pid -> connections it holds open in BLPOP (named by the app)."""
    out: Dict[int, int] = {}
    for line in server.command("CLIENT", "LIST").decode(errors="replace").splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("name", "").startswith("worker-") and fields.get("cmd") == "blpop":
            pid = int(fields["name"][len("worker-"):])
            out[pid] = out.get(pid, 0) + 1
    return out


def test_gunicorn_preload_workers_share_one_budget(host_url, redis_server, wait_until):
    import subprocess
    import sys

    from redis_safepool.testing import free_port

    port = free_port()
    env = dict(os.environ, APP_REDIS_URL=host_url, REDIS_SAFEPOOL_SCOPE="host")
    proc = subprocess.Popen(
        # eight threads a worker: one worker may take all six holds at once
        [sys.executable, "-m", "gunicorn", "--workers", "4", "--preload", "--worker-class",
         "gthread", "--threads", "8", "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "2",
         "--chdir", GUNICORN_APP, "app:app"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    holds: List[threading.Thread] = []
    try:
        def up() -> bool:
            try:
                return bool(_get(port, "/pid", timeout=2))
            except OSError:
                return False

        wait_until(up, timeout=60, what="gunicorn to serve")
        with PeakClients(redis_server) as peak:
            assert _load(port, 200) == []
            workers = _pids_serving(port, 40)

            # six requests hold all six connections; find a worker holding some and kill it
            for _ in range(6):
                t = threading.Thread(target=lambda: _get_quietly(port, "/hold?s=60"), daemon=True)
                t.start()
                holds.append(t)
            wait_until(lambda: sum(_holders(redis_server).values()) == 6, timeout=60,
                       what="six held connections")
            victim, held = max(_holders(redis_server).items(), key=lambda kv: kv[1])
            assert sp.host_stats(host_url)["total"] == 6
            reclaimed = sp.host_stats(host_url)["reclaimed"]
            os.kill(victim, signal.SIGKILL)
            t0 = time.monotonic()
            wait_until(lambda: sp.host_stats(host_url)["reclaimed"] >= reclaimed + held,
                       timeout=5, what="the killed worker's slots back")
            print(f"{held} slots of a killed gunicorn worker back after "
                  f"{time.monotonic() - t0:.3f}s")
            redis_server.command("LPUSH", "hold", *["x"] * (6 - held))  # the other holds end

            # the master forks a new worker, which serves on the same budget
            wait_until(lambda: _pids_serving(port, 8) - workers, timeout=60,
                       what="a new worker to serve")
            assert _load(port, 200) == []
        assert peak.peak <= 6, f"the server saw {peak.peak} connections from a budget of 6"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for t in holds:
            t.join(5)


def _get_quietly(port: int, path: str) -> None:
    try:
        _get(port, path, timeout=90)
    except OSError:
        pass  # the worker serving it was killed


def _pids_serving(port: int, requests: int) -> set:
    return {int(_get(port, "/pid")) for _ in range(requests)}


def test_command_line_shows_the_host_view(host_url, make_pool):
    import json
    import subprocess
    import sys

    pool = make_pool(host_url, max_connections=5, scope="host")
    held = pool.get_connection()
    out = subprocess.run([sys.executable, "-m", "redis_safepool", "stats", "--host", "--json",
                          "--url", host_url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    view = json.loads(out.stdout)
    assert view["max_connections"] == 5 and view["in_use"] == 1 and view["processes"] == 1
    assert pool.stats()["host_processes"] == 1  # reading attached nothing
    pool.release(held)
    missing = host_url[: -len("/0")] + "/7"
    out = subprocess.run([sys.executable, "-m", "redis_safepool", "stats", "--host",
                          "--url", missing], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no host budget" in out.stderr


# ---- Celery ------------------------------------------------------------------------------

CELERY_TASKS = 40
CELERY_BACKEND_BUDGET = 2  # less than the 4 children would hold with a budget each


def _worker_connections(server, worker_pid: int) -> Dict[int, int]:
    """db -> connections the whole worker (master and children) holds to ``server``."""
    from process_clients import connections_by_process

    counts: Dict[int, int] = {}
    for per_db in connections_by_process(server, worker_pid).values():
        for db, n in per_db.items():
            counts[db] = counts.get(db, 0) + n
    return counts


def test_celery_prefork_worker_within_one_host_budget(redis_server, wait_until, monkeypatch):
    import subprocess
    import sys

    from process_clients import process_tree
    from test_celery import APP_DIR, BROKER_BUDGET

    BACKEND_BUDGET = CELERY_BACKEND_BUDGET

    broker_url = redis_server.url
    backend_url = broker_url.rsplit("/", 1)[0] + "/1"
    env = dict(os.environ, SAFEPOOL_TEST_BROKER=broker_url, SAFEPOOL_TEST_BACKEND=backend_url,
               SAFEPOOL_TEST_BROKER_BUDGET=str(BROKER_BUDGET),
               SAFEPOOL_TEST_BACKEND_BUDGET=str(BACKEND_BUDGET))
    env["PYTHONPATH"] = os.pathsep.join(
        [str(APP_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    for key in [k for k in env if k.startswith("SAFEPOOL_TEST_")]:
        monkeypatch.setenv(key, env[key])
    worker_env = dict(env, REDIS_SAFEPOOL_SCOPE="host")  # the producer here keeps its own
    worker_env.pop("DJANGO_SETTINGS_MODULE", None)  # left by the Django tests: Celery would set it up
    sys.modules.pop("safepool_tasks", None)  # another test's copy names its own server
    sys.path.insert(0, str(APP_DIR))
    try:
        import safepool_tasks
    finally:
        sys.path.remove(str(APP_DIR))
    log = open(os.path.join(redis_server.dir, "worker.log"), "w+")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "safepool_tasks", "worker", "--pool=prefork",
         "-c", "4", "--loglevel=WARNING", "--without-gossip", "--without-mingle",
         "--without-heartbeat"],
        cwd=str(APP_DIR), env=worker_env, stdout=log, stderr=subprocess.STDOUT,
    )
    peak: Dict[int, int] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                for db, n in _worker_connections(redis_server, worker.pid).items():
                    peak[db] = max(peak.get(db, 0), n)
            except (OSError, RuntimeError, ValueError):
                pass  # a process just exited
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        wait_until(lambda: len(process_tree(worker.pid)) >= 5, timeout=60,
                   what="the worker and its 4 children")
        sampler.start()
        results = [safepool_tasks.double.delay(i) for i in range(CELERY_TASKS)]
        values = [r.get(timeout=120) for r in results]
        assert sorted(v["value"] for v in values) == [2 * i for i in range(CELERY_TASKS)]
        assert len({v["pid"] for v in values}) >= 2  # the children shared the work
        stop.set()
        sampler.join(10)
        print("peak connections of the worker by db:", peak)
        assert peak, "no connection of the worker was ever sampled"
        # the whole worker, all five processes together, within each budget
        assert peak.get(0, 0) <= BROKER_BUDGET, peak
        assert peak.get(1, 0) <= BACKEND_BUDGET, peak
        assert worker.poll() is None, "the worker died"
    finally:
        stop.set()
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
        log.seek(0)
        print(log.read()[-4000:])
        log.close()
        safepool_tasks.app.close()
        safepool_tasks.app.backend.client.connection_pool.close()
        sys.modules.pop("safepool_tasks", None)
        for url in (broker_url, backend_url):
            try:
                os.unlink(segment_path(url))
            except FileNotFoundError:
                pass
