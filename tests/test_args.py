"""Bad constructor arguments fail at construction with a message naming what was wrong."""

import math

import pytest

import redis_safepool as sp

URL = "redis://127.0.0.1:6399/0"  # construction must not need a server


@pytest.mark.parametrize("value, error", [
    (-1, ValueError),
    (-100, ValueError),
    (1.5, ValueError),
    (4.0, ValueError),
    ("4", ValueError),
    (True, ValueError),
    (False, ValueError),
    ([4], ValueError),
])
def test_bad_max_connections(value, error):
    with pytest.raises(error, match="max_connections"):
        sp.SafeConnectionPool.from_url(URL, max_connections=value)
    with pytest.raises(error, match="max_connections"):
        sp.SafeConnectionPool(host="127.0.0.1", port=6399, max_connections=value)


@pytest.mark.parametrize("value, error", [
    (-1, ValueError),
    (-0.001, ValueError),
    (math.nan, ValueError),
    ("1", TypeError),
    (True, TypeError),
    ([1], TypeError),
])
def test_bad_timeout(value, error):
    with pytest.raises(error, match="timeout"):
        sp.SafeConnectionPool.from_url(URL, max_connections=2, timeout=value)
    with pytest.raises(error, match="timeout"):
        sp.SafeConnectionPool(host="127.0.0.1", port=6399, max_connections=2, timeout=value)


@pytest.mark.parametrize("value", [0, 0.0, 0.25, 3, None])
def test_good_timeouts(value):
    pool = sp.SafeConnectionPool.from_url(URL, max_connections=2, timeout=value)
    try:
        assert pool.timeout == value
    finally:
        pool.close()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:6379/0",
    "127.0.0.1:6379",
    "",
    "redis://127.0.0.1:notaport/0",
    "redis://127.0.0.1:99999/0",
    "redis://127.0.0.1:6379/notadb",
])
def test_bad_urls(url):
    with pytest.raises(ValueError) as info:
        sp.SafeConnectionPool.from_url(url, max_connections=2)
    assert str(info.value).strip()


def test_bad_scheme_message_lists_the_schemes():
    with pytest.raises(ValueError, match="redis://"):
        sp.SafeConnectionPool.from_url("http://127.0.0.1:6379/0")


def test_url_must_be_a_string():
    with pytest.raises(TypeError):
        sp.SafeConnectionPool.from_url(6379)


def test_from_url_needs_a_url():
    with pytest.raises(TypeError):
        sp.SafeConnectionPool.from_url(max_connections=2)


def test_from_url_keyword_and_query_arguments():
    pool = sp.SafeConnectionPool.from_url(url="redis://127.0.0.1:6399/3?socket_timeout=1.5",
                                          max_connections=7, timeout=0.5)
    try:
        assert pool.max_connections == 7
        assert pool.timeout == 0.5
        assert pool.connection_kwargs["db"] == 3
        assert pool.connection_kwargs["socket_timeout"] == 1.5
        assert pool.connection_kwargs["port"] == 6399
    finally:
        pool.close()


def test_repr_and_label_redact_password():
    pool = sp.SafeConnectionPool.from_url("redis://alice:s3cr3t-pw@127.0.0.1:6399/0",
                                          max_connections=2)
    try:
        for text in (repr(pool), str(pool), pool.endpoint, str(pool.stats()),
                     str(sp.stats())):
            assert "s3cr3t-pw" not in text, text
        assert "127.0.0.1" in repr(pool) and "6399" in repr(pool)
        assert "127.0.0.1:6399" in pool.endpoint
    finally:
        pool.close()


def test_repr_redacts_password_keyword():
    pool = sp.SafeConnectionPool(host="127.0.0.1", port=6399, password="hunter2-pw",
                                 max_connections=2)
    try:
        assert "hunter2-pw" not in repr(pool)
        assert "SafeConnectionPool" in repr(pool)
    finally:
        pool.close()


def test_asyncio_repr_redacts_password():
    import redis_safepool.asyncio as spa

    pool = spa.SafeConnectionPool.from_url("redis://alice:s3cr3t-pw@127.0.0.1:6399/0",
                                           max_connections=2)
    assert "s3cr3t-pw" not in repr(pool) and "alice" not in repr(pool)
    assert "127.0.0.1" in repr(pool) and "SafeConnectionPool" in repr(pool)
