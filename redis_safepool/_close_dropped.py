"""Closes connections the C core dropped: sync ones at once, asyncio ones on their own loop."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Tuple, Type

from redis.asyncio.connection import AbstractConnection

__all__ = ["dispose", "add_async_connection_class"]

_ASYNC_CONNECTIONS: Tuple[Type[Any], ...] = (AbstractConnection,)


def add_async_connection_class(cls: type) -> None:
    """Another client family's asyncio connection base class (valkey-py's)."""
    global _ASYNC_CONNECTIONS
    if cls not in _ASYNC_CONNECTIONS:
        _ASYNC_CONNECTIONS += (cls,)


def dispose(conn: Any) -> None:
    """Close a connection the core dropped, on the right loop for asyncio ones."""
    if not isinstance(conn, _ASYNC_CONNECTIONS):
        conn.disconnect()
        return
    writer = conn._writer
    if writer is None:
        return
    # Close the server side now, from any thread (a syscall on the socket);
    # the transport notices on its own loop. The budget counts the slot until
    # this returns.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    loop = getattr(writer, "_loop", None)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is None or loop is running:
        conn._close()
    elif not loop.is_closed():
        loop.call_soon_threadsafe(conn._close)
