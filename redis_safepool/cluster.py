"""RedisCluster whose every node pool is a SafeConnectionPool (one process-wide budget per node)."""

from __future__ import annotations

from typing import Any, List, Optional

from redis.cluster import ClusterNode, RedisCluster

from ._pool_base import check_url
from ._endpoint_keys import _host, _port

__all__ = ["SafeRedisCluster", "safe_cluster", "node_pools"]


def _safe_pool_class():
    from .pool import SafeConnectionPool  # late: the C core may be absent at import time

    return SafeConnectionPool


class SafeRedisCluster(RedisCluster):
    """``redis.cluster.RedisCluster`` with a ``SafeConnectionPool`` per node.

    redis-py builds node pools with ``connection_pool_class`` only when the
    client was created from a URL (``NodesManager.from_url``); otherwise each
    node gets a plain ``Redis(host=..., port=...)`` with an unbounded
    ``ConnectionPool``. This class always takes the URL path: ``host``/``port``
    (or the first startup node) become ``url``, ``ssl=True`` becomes
    ``rediss://``. ``max_connections`` and ``timeout`` are each node's budget
    and wait limit; the budget is process-wide per node address, so several
    cluster clients (and plain pools) on one node share it.
    """

    def __init__(self, host: Optional[str] = None, port: int = 6379,
                 startup_nodes: Optional[List[ClusterNode]] = None,
                 url: Optional[str] = None, connection_pool_class: Any = None,
                 **kwargs: Any) -> None:
        startup_nodes = list(startup_nodes or [])
        if url is None:
            if host is None:
                if not startup_nodes:
                    # let redis-py raise its usual "requires at least one node" error
                    super().__init__(host=None, port=port, startup_nodes=[], **kwargs)
                    return
                first = startup_nodes.pop(0)
                host, port = first.host, first.port
            scheme = "rediss" if kwargs.pop("ssl", False) else "redis"
            url = f"{scheme}://{_url_host(_host({'host': host}))}:{_port({'port': port})}"
        else:
            check_url(url)  # its errors quote the URL without the password
            if kwargs.pop("ssl", False) and url.startswith("redis://"):
                url = "rediss://" + url[len("redis://"):]
        super().__init__(startup_nodes=startup_nodes, url=url,
                         connection_pool_class=connection_pool_class or _safe_pool_class(),
                         **kwargs)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def safe_cluster(*args: Any, **kwargs: Any) -> SafeRedisCluster:
    """``SafeRedisCluster(*args, **kwargs)``; with one ``redis://`` string argument, ``from_url``."""
    if len(args) == 1 and isinstance(args[0], str) and "://" in args[0]:
        return SafeRedisCluster(url=args[0], **kwargs)
    return SafeRedisCluster(*args, **kwargs)


def node_pools(cluster: RedisCluster) -> dict:
    """``{"host:port": pool}`` of the node pools the cluster client holds right now."""
    out = {}
    for node in cluster.get_nodes():
        if node.redis_connection is not None:
            out[node.name] = node.redis_connection.connection_pool
    return out
