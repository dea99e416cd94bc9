"""What users and tools read off a pool (repr, URL and argument errors) matches redis-py's pools."""

import re

import pytest
import redis
import redis.asyncio as aredis

import redis_safepool as sp
import redis_safepool.asyncio as sp_async
from redis_safepool.pool import DEFAULT_MAX_CONNECTIONS

URL = "redis://alice:s3cr3t-pw@127.0.0.1:6399/2"  # nothing is connected: no server needed
REPR_SHAPE = re.compile(r"^<([\w.]+)\.(\w+)\(<([\w.]+)\.(\w+)\((.*)\)>\)>$")

PAIRS = [
    (redis.ConnectionPool, sp.SafeConnectionPool),
    (redis.BlockingConnectionPool, sp.SafeConnectionPool),
    (aredis.ConnectionPool, sp_async.SafeConnectionPool),
]


def _kwarg_names(text):
    """The connection kwarg names in a pool repr (values may hold commas of their own)."""
    return re.findall(r"(?:^|,)(\w+)=", text)


@pytest.mark.parametrize("theirs, ours", PAIRS)
def test_repr_has_redis_py_shape(theirs, ours):
    their_pool, our_pool = theirs.from_url(URL), ours.from_url(URL, max_connections=2)
    try:
        their_match = REPR_SHAPE.match(repr(their_pool))
        our_match = REPR_SHAPE.match(repr(our_pool))
        assert their_match and our_match, repr(our_pool)
        assert our_match.group(2) == "SafeConnectionPool"
        assert our_match.group(1) == ours.__module__
        # the same connection class and the same connection kwargs, in the same order
        assert our_match.group(3, 4) == their_match.group(3, 4)
        assert _kwarg_names(our_match.group(5)) == _kwarg_names(their_match.group(5))
        assert "host=127.0.0.1" in our_match.group(5) and "db=2" in our_match.group(5)
        assert "s3cr3t-pw" not in repr(our_pool) and "alice" not in repr(our_pool)
    finally:
        our_pool._close_core()


def test_repr_leaves_the_pool_figures_to_stats():
    pool = sp.SafeConnectionPool.from_url("redis://127.0.0.1:6399/3", max_connections=3,
                                          timeout=1.5)
    try:
        assert "max_connections" not in repr(pool)
        assert pool.stats()["max_connections"] == 3 and pool.timeout == 1.5
    finally:
        pool.close()


@pytest.mark.parametrize("url", ["redis:127.0.0.1:12345", "redis:/127.0.0.1:1/0",
                                 "rediss:host", "unix:/tmp/redis.sock", "127.0.0.1:6379"])
@pytest.mark.parametrize("theirs, ours", PAIRS)
def test_missing_scheme_separator_is_named_as_redis_py_does(theirs, ours, url):
    # redis.asyncio's parser reads "redis:host:1" as an empty URL (it would connect
    # to localhost:6379): the sync parser's error is the reference for both
    with pytest.raises(ValueError) as their_error:
        redis.ConnectionPool.from_url(url) if theirs is aredis.ConnectionPool else theirs.from_url(url)
    with pytest.raises(ValueError) as our_error:
        ours.from_url(url)
    assert str(our_error.value) == str(their_error.value)
    assert "redis://" in str(our_error.value)
    assert "db" not in str(our_error.value)


@pytest.mark.parametrize("value", ["5", 5.0, 2.5, [4], -1])
@pytest.mark.parametrize("theirs, ours", PAIRS)
def test_bad_max_connections_raises_what_redis_py_raises(theirs, ours, value):
    with pytest.raises(ValueError):
        theirs(host="127.0.0.1", port=6399, max_connections=value)
    with pytest.raises(ValueError, match="max_connections"):
        ours(host="127.0.0.1", port=6399, max_connections=value)


@pytest.mark.parametrize("value", [0, None])
def test_zero_or_none_max_connections_means_the_default(value):
    """redis-py reads 0 as "use the default"; so do we (and our default is 50)."""
    assert redis.ConnectionPool(max_connections=value).max_connections == 100
    pool = sp.SafeConnectionPool(host="127.0.0.1", port=6399, db=4, max_connections=value)
    try:
        assert pool.max_connections == DEFAULT_MAX_CONNECTIONS == 50
    finally:
        pool.close()


def test_every_function_of_the_core_has_a_signature():
    # text signatures in the C docstrings: inspect.signature() works on all of them
    import inspect

    from redis_safepool import _core

    missing = []
    for owner in (_core, _core.PoolCore, _core.LoopInbox):
        for name, value in vars(owner).items():
            if callable(value) and not isinstance(value, type) and not name.startswith("__"):
                try:
                    inspect.signature(value)
                except ValueError:
                    missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
    assert missing == []
