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


@pytest.mark.parametrize("value", [0, 0.0, 0.25, 3, 10**9, None])
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


# ------------------------------------------------------------- endpoint keys


def _async_pool(**kwargs):
    from redis_safepool.asyncio import SafeConnectionPool as AsyncPool

    return AsyncPool(**kwargs)


BUILDERS = {
    "sync": lambda **kw: sp.SafeConnectionPool(max_connections=2, **kw),
    "asyncio": lambda **kw: _async_pool(max_connections=2, **kw),
}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
@pytest.mark.parametrize("kwargs, words", [
    (dict(host="127.0.0.1", port=0), "port"),
    (dict(host="127.0.0.1", port=99999), "port"),
    (dict(host="127.0.0.1", port=-1), "port"),
    (dict(host="127.0.0.1", port=True), "port"),
    (dict(host="127.0.0.1", port=1.5), "port"),
    (dict(host="127.0.0.1", port="http"), "port"),
    (dict(host="", port=6399), "host"),
    (dict(host="   ", port=6399), "host"),
    (dict(host=127, port=6399), "host"),
    (dict(host="127.0.0.1", port=6399, db=-1), "db"),
    (dict(host="127.0.0.1", port=6399, db=True), "db"),
    (dict(host="127.0.0.1", port=6399, db=1.5), "db"),
    (dict(host="127.0.0.1", port=6399, protocol=7), "protocol"),
    (dict(host="127.0.0.1", port=6399, protocol=True), "protocol"),
    (dict(host="127.0.0.1", port=6399, socket_timeout=math.nan), "socket_timeout"),
    (dict(host="127.0.0.1", port=6399, socket_connect_timeout=-1), "socket_connect_timeout"),
])
def test_bad_endpoint_keys_are_rejected(kind, kwargs, words):
    with pytest.raises((ValueError, TypeError), match=words):
        BUILDERS[kind](**kwargs)


@pytest.mark.parametrize("url, words", [
    ("redis://127.0.0.1:0/0", "port"),
    ("redis://127.0.0.1:65536/0", "port"),
    ("redis://127.0.0.1:6399/0?protocol=7", "protocol"),
    ("redis://127.0.0.1:6399/-1", "db"),
])
def test_bad_endpoint_keys_in_urls_are_rejected(url, words):
    from redis_safepool.asyncio import SafeConnectionPool as AsyncPool

    for build in (sp.SafeConnectionPool.from_url, AsyncPool.from_url,
                  lambda u: sp.configure(u, max_connections=2)):
        with pytest.raises(ValueError, match=words):
            build(url)


def test_port_zero_never_shares_the_default_ports_budget():
    pool = sp.SafeConnectionPool(host="127.0.0.1", port=6379, max_connections=3)
    try:
        with pytest.raises(ValueError, match="port"):
            sp.SafeConnectionPool(host="127.0.0.1", port=0, max_connections=3)
        assert pool.stats()["pools"] == 1
    finally:
        pool.close()


@pytest.mark.parametrize("kwargs", [dict(port="6399"), dict(db="2"), dict(protocol="3"),
                                    dict(protocol=3), dict(port=65535), dict(port=1)])
def test_good_endpoint_keys(kwargs):
    pool = sp.SafeConnectionPool(**dict(dict(host="127.0.0.1", port=6399), **kwargs),
                                 max_connections=2)
    pool.close()


# ---------------------------------------------------------- numeric arguments


def test_huge_max_connections_is_a_value_error():
    for value in (2**31, 2**64, 10**30):
        with pytest.raises(ValueError, match="max_connections"):
            sp.SafeConnectionPool.from_url(URL, max_connections=value)
        with pytest.raises(ValueError, match="max_connections"):
            sp.configure(URL, max_connections=value)
    pool = sp.SafeConnectionPool.from_url(URL, max_connections=2)
    try:
        with pytest.raises(ValueError, match="max_connections"):
            sp.configure(pool, max_connections=2**31)
    finally:
        pool.close()


@pytest.mark.parametrize("value, error", [
    # ValueError for a wrong type too, as the pools (and redis-py's) raise
    (math.nan, ValueError), (math.inf, ValueError), (0, ValueError), (-1, ValueError),
    (True, ValueError), ("1", ValueError), (None, ValueError),
])
def test_configure_checks_max_connections_like_the_pools(value, error):
    with pytest.raises(error, match="max_connections"):
        sp.configure(URL, max_connections=value)


def test_infinite_timeout_waits_forever():
    from redis_safepool.asyncio import SafeConnectionPool as AsyncPool

    pool = sp.SafeConnectionPool.from_url(URL, max_connections=2, timeout=math.inf)
    try:
        assert pool.timeout is None
    finally:
        pool.close()
    assert AsyncPool.from_url(URL, max_connections=2, timeout=math.inf).timeout is None


@pytest.mark.parametrize("name", ["leak_threshold", "max_idle_time", "max_lifetime"])
@pytest.mark.parametrize("value, error", [
    (math.nan, ValueError), (-1, ValueError), (True, TypeError), ("1", TypeError),
])
def test_bad_pool_seconds(name, value, error):
    with pytest.raises(error, match=name):
        sp.SafeConnectionPool.from_url(URL, max_connections=2, **{name: value})


@pytest.mark.parametrize("name", ["leak_threshold", "max_idle_time", "max_lifetime"])
def test_infinite_pool_seconds_mean_never(name):
    pool = sp.SafeConnectionPool.from_url(URL, max_connections=2, **{name: math.inf})
    pool.close()


@pytest.mark.parametrize("kwargs, error", [
    (dict(leak_threshold=math.nan), ValueError),
    (dict(leak_threshold=0), ValueError),
    (dict(leak_threshold=True), TypeError),
    (dict(pool_warn_threshold=True), TypeError),
    (dict(pool_warn_threshold=1.5), TypeError),
    (dict(pool_warn_threshold=0), ValueError),
])
def test_observe_configure_checks_its_numbers(kwargs, error):
    from redis_safepool import observe

    with pytest.raises(error, match=next(iter(kwargs))):
        observe.set_thresholds(**kwargs)


@pytest.mark.parametrize("name", ["interval", "recover_interval", "backoff_min", "backoff_max",
                                  "probe_timeout"])
@pytest.mark.parametrize("value, error", [
    (math.nan, ValueError), (math.inf, ValueError), (-1, ValueError), (0, ValueError),
    (True, TypeError), ("1", TypeError), (None, TypeError),
])
def test_checker_config_checks_its_numbers(name, value, error):
    before = sp.checker_config()
    with pytest.raises(error, match=name):
        sp.checker_config(**{name: value})
    assert sp.checker_config() == before


def test_checker_config_rejects_unknown_keys_and_non_bool_enabled():
    with pytest.raises(TypeError, match="enabled"):
        sp.checker_config(enabled=1)
    with pytest.raises(TypeError, match="intervall"):
        sp.checker_config(intervall=1)


@pytest.mark.parametrize("kwargs", [dict(host="127.0.0.1", port=0), dict(host="127.0.0.1", port=True),
                                    dict(host="127.0.0.1", port=70000), dict(host="", port=7000),
                                    dict(url="redis://:cluster-Secret@127.0.0.1:99999")])
def test_cluster_checks_its_address_before_connecting(kwargs):
    from redis_safepool.cluster import SafeRedisCluster

    with pytest.raises(ValueError) as info:
        SafeRedisCluster(**kwargs)
    assert "cluster-Secret" not in str(info.value)


def test_asyncio_repr_redacts_password():
    import redis_safepool.asyncio as spa

    pool = spa.SafeConnectionPool.from_url("redis://alice:s3cr3t-pw@127.0.0.1:6399/0",
                                           max_connections=2)
    assert "s3cr3t-pw" not in repr(pool) and "alice" not in repr(pool)
    assert "127.0.0.1" in repr(pool) and "SafeConnectionPool" in repr(pool)
