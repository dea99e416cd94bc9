"""One host of a simulated fleet: a SafeConnectionPool and busy threads against one server; prints JSON."""

from __future__ import annotations

import json
import sys
import threading
import time


def main() -> None:
    url, threads, max_connections, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        float(sys.argv[4])
    import redis

    import redis_safepool as sp

    if len(sys.argv) > 5:  # the checker's interval: how often the server's view is read
        sp.checker_config(recover_interval=0.05, interval=float(sys.argv[5]))
    else:
        sp.checker_config(recover_interval=0.05)
    pool = sp.SafeConnectionPool.from_url(url, max_connections=max_connections, timeout=10)
    client = redis.Redis(connection_pool=pool)
    client.ping()
    # The first probe reads the server's view; only then does the load start.
    deadline = time.monotonic() + 10
    while pool.stats()["server_maxclients"] is None and time.monotonic() < deadline:
        time.sleep(0.005)
    print("ready", flush=True)
    sys.stdin.readline()  # the test starts every host at once
    ops = [0] * threads
    errors: list = []
    peak = [0]
    last_ok = [0.0]  # time.monotonic() of the last command that worked (one clock machine-wide)
    stop_at = time.monotonic() + seconds

    def work(i: int) -> None:
        while time.monotonic() < stop_at and ops[i] < 100000:
            try:
                # holds its connection 10 ms on the server, no CPU: every thread wants one
                client.blpop(["fleet:nothing"], timeout=0.01)
                ops[i] += 1
                last_ok[0] = time.monotonic()
            except Exception as exc:  # counted and reported, never fatal to the host
                errors.append(f"{type(exc).__name__}: {exc}")
            peak[0] = max(peak[0], pool.stats()["total"])

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + 30)
    st = pool.stats()
    print(json.dumps({"ops": sum(ops), "errors": len(errors), "first_errors": errors[:3],
                      "peak_total": peak[0], "last_ok": last_ok[0], "allowance": st["allowance"],
                      "decreases": st["allowance_decreases"]}), flush=True)
    pool.close()


if __name__ == "__main__":
    main()
