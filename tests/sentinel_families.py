"""The client families a Sentinel test body runs over: redis-py and valkey-py, sync and asyncio."""

from __future__ import annotations

import importlib
import types

import pytest


def _family(lib: str, safe: str, client: str, sentinel: str, retry: str,
            sync: str = "") -> types.SimpleNamespace:
    """``lib``'s names, each a dotted path; ``sync``: the sync SafeSentinel module beside it."""
    def load(path: str):
        module, _, attr = path.rpartition(".")
        return getattr(importlib.import_module(module), attr)

    pytest.importorskip(lib)
    backoff = importlib.import_module(f"{lib}.backoff")
    retry_class = load(retry)
    return types.SimpleNamespace(
        name=lib, module=importlib.import_module(safe), client=load(client),
        errors=importlib.import_module(f"{lib}.exceptions"),
        plain_master_not_found=load(f"{sentinel}.MasterNotFoundError"),
        plain_managed=load(f"{sentinel}.SentinelManagedConnection"),
        sync=importlib.import_module(sync) if sync else None,
        retry=lambda: retry_class(backoff.ExponentialBackoff(cap=0.05, base=0.01), 2))


FAMILIES = {
    "redis-py": lambda: _family("redis", "redis_safepool.sentinel", "redis.Redis",
                                "redis.sentinel", "redis.retry.Retry"),
    "valkey-py": lambda: _family("valkey", "redis_safepool.valkey.sentinel", "valkey.Valkey",
                                 "valkey.sentinel", "valkey.retry.Retry"),
    "redis-py asyncio": lambda: _family(
        "redis", "redis_safepool.asyncio_sentinel", "redis.asyncio.Redis",
        "redis.asyncio.sentinel", "redis.asyncio.retry.Retry", sync="redis_safepool.sentinel"),
    "valkey-py asyncio": lambda: _family(
        "valkey", "redis_safepool.valkey.asyncio_sentinel", "valkey.asyncio.Valkey",
        "valkey.asyncio.sentinel", "valkey.asyncio.retry.Retry",
        sync="redis_safepool.valkey.sentinel"),
}


def over(*names: str):
    """Parametrize a test's ``family`` fixture over these families."""
    return pytest.mark.parametrize("family", [FAMILIES[n] for n in names], ids=list(names),
                                   indirect=True)


@pytest.fixture
def family(request):
    return request.param()


@pytest.fixture
def topo():
    """One master, one replica and three sentinels, for one test."""
    from topology import SentinelTopology

    with SentinelTopology(down_after_ms=500, failover_timeout_ms=2000) as t:
        yield t


def master_client(sentinel, name: str, retry, **kw):
    """``sentinel.master_for`` with the tests' budget, timeouts and client name."""
    from topology import SERVICE

    for key, value in {"max_connections": 4, "timeout": 5, "client_name": name,
                       "socket_timeout": 2, "socket_connect_timeout": 1, "retry": retry}.items():
        kw.setdefault(key, value)
    return sentinel.master_for(SERVICE, **kw)
