"""``python -m redis_safepool``: print pool stats as a table or ``explain()`` them (own pool, demo, or a running app)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import urllib.request
from typing import Any, Dict, List, Optional

USAGE_EXAMPLES = """\
examples:
  python -m redis_safepool                         demo against a throwaway redis-server
  python -m redis_safepool stats --url redis://127.0.0.1:6379/0 --max-connections 20
  python -m redis_safepool explain --url redis://127.0.0.1:6379/0
  python -m redis_safepool stats --from http://127.0.0.1:5000/safepool/stats
  python -m redis_safepool stats --host --url redis://127.0.0.1:6379/0   host budget, read-only
"""


def fetch_stats(source: str, timeout: float = 5.0) -> Dict[str, Dict[str, Any]]:
    """Stats JSON from a running app's stats URL, a file, or '-' (stdin)."""
    if source == "-":
        return json.load(sys.stdin)
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=timeout) as resp:  # noqa: S310 - user-given URL
            return json.loads(resp.read().decode())
    with open(source) as f:
        return json.load(f)


def _own_pool(url: str, max_connections: Optional[int], timeout: Optional[float]) -> Any:
    import redis

    from . import SafeConnectionPool

    kwargs: Dict[str, Any] = {}
    if max_connections is not None:
        kwargs["max_connections"] = max_connections
    if timeout is not None:
        kwargs["timeout"] = timeout
    pool = SafeConnectionPool.from_url(url, **kwargs)
    try:
        redis.Redis(connection_pool=pool).ping()
    except redis.exceptions.RedisError as exc:
        print(f"PING {pool.endpoint if hasattr(pool, 'endpoint') else url} failed: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
    return pool


def _demo(args: argparse.Namespace) -> int:
    """Start a throwaway server, run a little concurrent load, and show both views."""
    import redis

    from .report import explain, format_table
    from .testing import RedisServer

    with RedisServer() as server:
        pool = _own_pool(server.url, args.max_connections or 4, args.timeout or 2.0)
        client = redis.Redis(connection_pool=pool)

        def work(n: int) -> None:
            for i in range(50):
                client.set(f"demo:{n}:{i}", i)
                client.get(f"demo:{n}:{i}")

        threads: List[threading.Thread] = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"demo: 8 threads x 100 commands on {server.url}, "
              f"server sees {server.connected_clients()} client connections\n")
        print(format_table())
        print()
        print(explain())
        pool.close()
    return 0


def _host_view(url: str, as_json: bool) -> int:
    """The host budget every process on this host shares for ``url``: no pool, no connection."""
    from . import host_stats
    from ._redact import redact_url

    try:
        view = host_stats(url)
    except OSError as exc:
        print(f"{redact_url(url)}: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(view, indent=2, sort_keys=True))
    else:
        print(f"host budget of {redact_url(url)}")
        for key in ("max_connections", "total", "in_use", "processes", "waiting", "reclaimed",
                    "state", "connecting", "max_connecting", "probes_led", "probes_skipped"):
            print(f"  {key:<16} {view[key]}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m redis_safepool", description=__doc__,
        epilog=USAGE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", choices=["stats", "explain", "demo"], default=None)
    parser.add_argument("--url", default=None, help="redis URL to open a pool on (default $REDIS_URL)")
    parser.add_argument("--from", dest="source", help="stats JSON of a running app: URL, file or -")
    parser.add_argument("--max-connections", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=None, help="pool timeout in seconds")
    parser.add_argument("--json", action="store_true", help="print the stats as JSON")
    parser.add_argument("--host", action="store_true",
                        help="show the endpoint's host budget (scope='host'), read from its "
                             "shared segment without connecting")
    args = parser.parse_args(argv)

    from .report import all_stats, explain, format_table

    url = args.url or os.environ.get("REDIS_URL")
    if args.command == "demo" or (args.command is None and not url and not args.source):
        return _demo(args)
    if args.host:
        return _host_view(url or "redis://127.0.0.1:6379/0", args.json)
    if args.source:
        stats = fetch_stats(args.source)
    else:
        pool = _own_pool(url or "redis://127.0.0.1:6379/0", args.max_connections, args.timeout)
        stats = all_stats()
        if not stats and hasattr(pool, "stats"):
            stats = {pool.endpoint: pool.stats()}
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
    elif args.command == "explain":
        print(explain(stats=stats))
    else:
        print(format_table(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
