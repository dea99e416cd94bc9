"""Idle connections are shared only between pools of the very same connection class object."""

import pytest
import redis
from redis.connection import Connection

import redis_safepool as sp


def channel_connection_class(channel: str) -> type:
    """What kombu does per channel: a subclass with one module and qualname, closing over it."""

    class Connection_(Connection):
        def on_connect(self) -> None:
            super().on_connect()
            self.channel = channel

    return Connection_


@pytest.mark.usefixtures("no_checker")
def test_same_named_classes_never_share_connections(server_url):
    a_cls, b_cls = channel_connection_class("a"), channel_connection_class("b")
    assert (a_cls.__module__, a_cls.__qualname__) == (b_cls.__module__, b_cls.__qualname__)
    pool_a = sp.SafeConnectionPool.from_url(server_url, connection_class=a_cls, max_connections=4)
    pool_b = sp.SafeConnectionPool.from_url(server_url, connection_class=b_cls, max_connections=4)
    try:
        conn = pool_a.get_connection()
        conn.send_command("PING")
        assert conn.read_response() == b"PONG"
        pool_a.release(conn)
        other = pool_b.get_connection()  # must not be pool_a's idle connection
        assert type(other) is b_cls and other is not conn
        pool_b.release(other)
        same = pool_a.get_connection()  # the same class object still shares
        assert same is conn
        pool_a.release(same)
        twin = sp.SafeConnectionPool.from_url(server_url, connection_class=a_cls,
                                              max_connections=4)
        assert twin.get_connection() is conn
        twin.release(conn)
        assert redis.Redis(connection_pool=twin).ping()
        twin.close()
    finally:
        pool_a.close()
        pool_b.close()
