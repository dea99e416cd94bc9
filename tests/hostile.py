"""A hostile listener on loopback: answers whatever it is sent by echoing it back (password included)."""

from __future__ import annotations

import socket
import threading
from typing import List, Optional


class EchoListener:
    """Listens on a free loopback port and echoes every chunk it receives.

    ``code=None`` sends the bytes back as they came (a non-Redis service);
    ``code="ERR"`` (or ``"LOADING"``...) answers each chunk with one RESP
    error line quoting it, the way an old server quotes the arguments of a
    command it does not know (``HELLO 3 AUTH default <password>``).
    """

    def __init__(self, code: Optional[str] = None, port: int = 0) -> None:
        self.code = code
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))  # 0: a free port
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self._clients: List[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="echo-listener", daemon=True)
        self._thread.start()

    def url(self, password: str, username: str = "") -> str:
        return f"redis://{username}:{password}@127.0.0.1:{self.port}/0"

    def _answer(self, data: bytes) -> bytes:
        if self.code is None:
            return data
        return b"-" + self.code.encode() + b" " + data.replace(b"\r\n", b" ") + b"\r\n"

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._clients.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(self._answer(data))
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients, self._clients = self._clients, []
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        for conn in clients:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def __enter__(self) -> "EchoListener":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
