"""A small WSGI app for gunicorn's prefork workers, on one host budget (tests/test_host_scope.py)."""

import os
import time
from urllib.parse import parse_qs

import redis

import redis_safepool as sp

# made once in the master (--preload); every worker forks with it
pool = sp.SafeConnectionPool.from_url(os.environ["APP_REDIS_URL"], max_connections=6, timeout=30)
client = redis.Redis(connection_pool=pool)


def hold(seconds: float) -> bytes:
    """Holds a connection named after this worker until the list `hold` gets an item
    or `seconds` pass: one-second BLPOPs, each well within the socket timeout."""
    deadline = time.monotonic() + seconds
    conn = pool.get_connection()
    try:
        conn.send_command("CLIENT", "SETNAME", f"worker-{os.getpid()}")
        conn.read_response()
        while time.monotonic() < deadline:
            conn.send_command("BLPOP", "hold", 1)
            if conn.read_response() is not None:
                break
    finally:
        pool.release(conn)
    return b"held"


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/pid":
        body = str(os.getpid()).encode()
    elif path == "/hold":
        body = hold(float(query.get("s", ["30"])[0]))
    else:
        body = str(client.incr("hits")).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
