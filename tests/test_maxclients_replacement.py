"""At maxclients == budget, a connection the pool replaces is never rejected by the server."""

from __future__ import annotations

import socket

import redis_safepool as sp

BUDGET = 4
ROUNDS = 20


def _ping(conn) -> None:
    conn.send_command("PING")
    assert conn.read_response() in (b"PONG", "PONG")


def _rejected(server, wait_until) -> int:
    """The server's rejected_connections, asked once it has closed every client we closed
    (none of its sockets left in CLOSE_WAIT): asked sooner, at maxclients, the query's own
    connection could be the one it rejects."""
    wait_until(lambda: server.unfreed_closes() == 0, timeout=10,
               what="the server to free the clients we closed")
    return int(server.info("stats")["rejected_connections"])


def _server_asleep(conn) -> None:
    """The server's event loop stops for 50 ms: whatever reaches it meanwhile is handled in
    one turn, in the order it arrived (the reply is read later)."""
    conn.send_command("DEBUG", "SLEEP", "0.05")


def test_replacement_at_a_full_server_is_not_rejected(redis_server_factory, make_pool, no_checker,
                                                      wait_until):
    """The server counts a connection we closed until it reads our FIN, one event-loop turn
    later. The pool closes the old socket before it connects the new one, so the FIN is
    queued at the server before the SYN and the server frees the old client before it
    accepts the new: nothing is rejected even with the server asleep across both."""
    sp.checker_config(server_reserve=0, server_reserve_min=0)  # the whole of maxclients is ours
    server = redis_server_factory(maxclients=BUDGET, enable_debug_command="yes")
    pool = make_pool(server.url, max_connections=BUDGET, timeout=5)
    conns = [pool.get_connection() for _ in range(BUDGET)]
    for conn in conns:
        _ping(conn)
    sleeper = conns[0]
    for _ in range(ROUNDS):
        _server_asleep(sleeper)
        old = conns.pop()
        old.disconnect()      # dropped (an error, a lifetime): the pool reconnects in its slot
        pool.release(old)
        new = pool.get_connection()
        _ping(new)            # answered once the server wakes: it was accepted
        conns.append(new)
        assert sleeper.read_response() in (b"OK", "OK")
    for conn in conns:
        pool.release(conn)
    pool.disconnect()
    assert _rejected(server, wait_until) == 0

    # The same server does reject a connection that reaches it before the close it replaces:
    # the test would see a pool that connected first.
    holders = [pool.get_connection() for _ in range(BUDGET)]
    for conn in holders:
        _ping(conn)
    _server_asleep(holders[0])
    early = socket.create_connection((server.host, server.port), timeout=5)
    holders[-1].disconnect()
    try:
        early.sendall(b"PING\r\n")
        reply = early.recv(128)
    except OSError:
        reply = b""
    finally:
        early.close()
    assert holders[0].read_response() in (b"OK", "OK")
    for conn in holders:
        pool.release(conn)
    pool.disconnect()
    assert reply.startswith(b"-ERR max number of clients") or reply == b""
    assert _rejected(server, wait_until) == 1

