"""Flask + redis-safepool demo: `python examples/flask_app.py` (own throwaway redis-server unless REDIS_URL is set).

Endpoints: /  (a counter), /cached (Flask-Caching on the same pool), /safepool/stats (JSON),
/safepool/explain (text), /metrics (Prometheus, if prometheus_client is installed).
Kill the redis-server while it runs: requests get a fast 503 with Retry-After, then recover.
`--smoke` runs a few requests through the test client and exits (used by the tests).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from flask import Flask, Response, jsonify

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from redis_safepool import observe, report  # noqa: E402
from redis_safepool.flask import SafePool  # noqa: E402


def create_app(redis_url: str) -> Flask:
    app = Flask(__name__)
    app.config.update(REDIS_URL=redis_url, REDIS_MAX_CONNECTIONS=10, REDIS_POOL_TIMEOUT=2)
    safepool = SafePool(app)  # the one-line change: a pool per app, budget per server
    try:
        from flask_caching import Cache
    except ImportError:
        cache = None
    else:
        app.config.update(CACHE_TYPE="RedisCache", CACHE_OPTIONS=safepool.cache_options(app))
        cache = Cache(app)

    @app.route("/")
    def index():
        return {"hits": safepool.client.incr("example:hits")}

    @app.route("/cached")
    def cached():
        if cache is None:
            return {"error": "pip install flask-caching"}, 501
        value = cache.get("example:expensive")
        if value is None:
            value = sum(range(100_000))
            cache.set("example:expensive", value, timeout=30)
        return {"value": value}

    @app.route("/safepool/stats")
    def stats():
        return jsonify(report.all_stats())

    @app.route("/safepool/explain")
    def explain():
        return Response(observe.explain() + "\n", mimetype="text/plain")

    @app.route("/metrics")
    def metrics():
        from redis_safepool.prometheus import exposition

        return Response(exposition(), mimetype="text/plain; version=0.0.4")

    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--smoke", action="store_true", help="run a few requests and exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)  # the `redis_safepool` logger: one line per state change
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so `finally` stops the redis-server

    server = None
    url = os.environ.get("REDIS_URL")
    if not url:
        from redis_safepool.testing import RedisServer

        server = RedisServer().start()
        url = server.url
        print(f"started a throwaway redis-server at {url} (pid {server.proc.pid})")
    try:
        app = create_app(url)
        if args.smoke:
            client = app.test_client()
            for path in ("/", "/", "/cached", "/safepool/stats", "/safepool/explain"):
                resp = client.get(path)
                print(path, resp.status_code, resp.get_data(as_text=True).strip()[:200])
                if resp.status_code != 200:
                    return 1
            return 0
        print(f"serving on http://127.0.0.1:{args.port}/  "
              f"(stats: python -m redis_safepool stats --from http://127.0.0.1:{args.port}/safepool/stats)")
        app.run(host="127.0.0.1", port=args.port, threaded=True)
        return 0
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
