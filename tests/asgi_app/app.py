"""A bare ASGI app on the asyncio safe pool for tests/test_integrations.py's uvicorn test."""

import os

import redis.asyncio as aredis

from redis_safepool.asyncio import SafeConnectionPool

pool = SafeConnectionPool.from_url(os.environ["APP_REDIS_URL"],
                                   max_connections=int(os.environ["APP_BUDGET"]), timeout=20,
                                   client_name=os.environ["APP_CLIENT_NAME"])
client = aredis.Redis(connection_pool=pool)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await client.blpop("safepool-asgi:nothing", timeout=0.1)  # holds a connection a while
    hits = await client.incr("safepool-asgi:hits")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(hits).encode()})
