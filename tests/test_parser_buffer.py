"""A connection released with a reply left in its parser's buffer is not handed out with it (as in redis-py)."""

import select
import socket

import pytest
import redis
from redis._parsers import _HiredisParser, _RESP2Parser

import redis_safepool as sp
from redis_safepool.testing import RedisServer

PARSERS = [pytest.param(_RESP2Parser, id="python-parser"),
           pytest.param(_HiredisParser, id="hiredis")]
POOLS = [pytest.param(redis.ConnectionPool, id="redis-py"),
         pytest.param(redis.BlockingConnectionPool, id="redis-py-blocking"),
         pytest.param(sp.SafeConnectionPool, id="safepool")]
STALE_REPLIES = b"+PONG\r\n$5\r\nstale\r\n"


def _make(pool_class, server: RedisServer, parser_class):
    # protocol=2: redis-py's pools check readiness only where no push may arrive
    return pool_class(host=server.host, port=server.port, protocol=2, parser_class=parser_class,
                      max_connections=2)


def _leave_reply_in_parser(conn, wait_until) -> None:
    """Two replies arrive together; read one: the other is in the parser, not the socket."""
    conn.send_packed_command(conn.pack_commands([("PING",), ("ECHO", "stale")]))
    sock = conn._sock
    wait_until(lambda: len(sock.recv(64, socket.MSG_PEEK)) >= len(STALE_REPLIES),
               what="both replies in the socket")
    assert conn.read_response() == b"PONG"
    assert not select.select([sock], [], [], 0)[0], "the socket should be drained"
    assert conn.can_read(), "the second reply should be waiting in the parser"


@pytest.mark.parametrize("parser_class", PARSERS)
@pytest.mark.parametrize("pool_class", POOLS)
def test_a_reply_left_in_the_parser_is_never_handed_out(pool_class, parser_class, redis_server,
                                                        wait_until):
    pool = _make(pool_class, redis_server, parser_class)
    try:
        conn = pool.get_connection()
        _leave_reply_in_parser(conn, wait_until)
        pool.release(conn)
        client = redis.Redis(connection_pool=pool)
        assert client.echo("fresh") == b"fresh"
        assert client.echo("again") == b"again"
    finally:
        pool.close()


@pytest.mark.parametrize("parser_class", PARSERS)
@pytest.mark.parametrize("pool_class", POOLS)
def test_a_clean_connection_is_handed_out_without_reconnecting(pool_class, parser_class,
                                                               redis_server):
    pool = _make(pool_class, redis_server, parser_class)
    try:
        client = redis.Redis(connection_pool=pool)
        assert client.ping()
        conn = pool.get_connection()
        sock = conn._sock
        assert conn.send_command("ECHO", "x") is None and conn.read_response() == b"x"
        pool.release(conn)
        again = pool.get_connection()
        assert again is conn and again._sock is sock
        pool.release(again)
    finally:
        pool.close()
