"""One host of the fleet replay: a pool of one kind and busy threads; counts per phase, prints JSON."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any, Dict, List

CP, BCP, SAFE = "ConnectionPool", "BlockingConnectionPool", "SafeConnectionPool"
CLIENT_NAME = "fleet-host"  # the replay's monitor counts the fleet's connections by it
MAX_OPS_PER_THREAD = 2_000_000  # every load loop is bounded in count as well as in time


def make_pool(kind: str, url: str, max_connections: int) -> Any:
    import redis

    kw = dict(max_connections=max_connections, client_name=CLIENT_NAME)
    if kind == CP:
        return redis.ConnectionPool.from_url(url, **kw)
    if kind == BCP:
        return redis.BlockingConnectionPool.from_url(url, timeout=10, **kw)
    import redis_safepool as sp

    return sp.SafeConnectionPool.from_url(url, timeout=10, **kw)


def main() -> None:
    import logging

    # the replay's tables say what happened; the hosts' transition logs would drown them
    logging.getLogger("redis_safepool").addHandler(logging.NullHandler())
    kind, url = sys.argv[1], sys.argv[2]
    threads, max_connections, limit = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    import redis

    pool = make_pool(kind, url, max_connections)
    client = redis.Redis(connection_pool=pool)
    deadline = time.monotonic() + 30
    while True:  # the host comes up once the server answers it
        try:
            client.ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    if kind == SAFE:  # its first probe has read the server's view before the load starts
        while pool.stats()["server_maxclients"] is None and time.monotonic() < deadline:
            time.sleep(0.005)
    phase = ["warmup"]
    ops: Dict[str, List[int]] = {}
    errors: Dict[str, Dict[str, int]] = {}
    stop = threading.Event()
    hard_stop = time.monotonic() + limit
    key = f"fleet:{os.getpid()}"

    def work(i: int) -> None:
        n = 0
        while not stop.is_set() and n < MAX_OPS_PER_THREAD and time.monotonic() < hard_stop:
            p = phase[0]
            try:
                client.incr(key)
                ops.setdefault(p, [0] * threads)[i] += 1
            except Exception as exc:  # counted per phase and kind: the replay reports them
                kinds = errors.setdefault(phase[0], {})  # the phase it failed in
                name = f"{type(exc).__name__}: {str(exc)[:60]}"
                kinds[name] = kinds.get(name, 0) + 1
                time.sleep(0.01)  # as an application would before trying again
            n += 1

    print("ready", flush=True)
    first = sys.stdin.readline().split()  # every host starts its load at once
    if len(first) == 2:
        phase[0] = first[1]
    print("ok", flush=True)
    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    for line in sys.stdin:  # "phase NAME" (acknowledged: "ok") ... "stop"
        words = line.split()
        if not words or words[0] == "stop":
            break
        phase[0] = words[1]
        print("ok", flush=True)
    stop.set()
    for w in workers:
        w.join(15)
    print(json.dumps({"ops": {p: sum(v) for p, v in ops.items()}, "errors": errors}), flush=True)
    os._exit(0)  # no pool teardown against a server the replay may have stopped


if __name__ == "__main__":
    main()
