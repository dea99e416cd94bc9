"""Django + redis-safepool demo: `python examples/django_project/run.py` (own redis-server unless REDIS_URL is set).

Serves http://127.0.0.1:8000/ (`--port N` to change) with Django's built-in RedisCache on SafeConnectionPool.
Kill the redis-server while it runs: views answer 503 JSON with Retry-After, then recover.
Stats: `python examples/django_project/manage.py safepool_stats` or GET /safepool/stats/.
`--smoke` runs a few requests through Django's test client and exits (used by the tests).
"""

from __future__ import annotations

import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "..")]


def main(argv: list) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exampleproject.settings")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so `finally` stops the redis-server
    server = None
    if not os.environ.get("REDIS_URL"):
        from redis_safepool.testing import RedisServer

        server = RedisServer().start()
        os.environ["REDIS_URL"] = server.url
        print(f"started a throwaway redis-server at {server.url} (pid {server.proc.pid})")
    try:
        if "--smoke" in argv:
            import django
            from django.test import Client

            django.setup()
            client = Client()
            for path in ("/", "/", "/safepool/stats/"):
                resp = client.get(path)
                print(path, resp.status_code, resp.content.decode()[:200])
                if resp.status_code != 200:
                    return 1
            return 0
        from django.core.management import execute_from_command_line

        # --noreload: the autoreloader would re-run this file in a child with its own server
        port = argv[argv.index("--port") + 1] if "--port" in argv else "8000"
        execute_from_command_line(["manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"])
        return 0
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
