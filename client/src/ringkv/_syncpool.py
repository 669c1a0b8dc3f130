"""The blocking client's connections: a keep-alive pool of plain sockets per node.

Plain sockets and the sans-I/O `_h11` (`http.client` cost more CPU per
request than the rest of the client); safe to share between threads. Used
by `Client` and by `ringkv.admin.Rebalancer`.
"""

from __future__ import annotations

import queue
import socket
import ssl
import threading

from ringkv import errors
from ringkv._core import Request, Response
from ringkv._h11 import ParsedResponse, ProtocolError, ResponseParser, prepare
from ringkv.errors import TransportError

__all__ = ["Pool"]


class _Conn:
    """One keep-alive connection: a socket and the parser of what it answers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = ResponseParser()

    def roundtrip(self, data: bytes) -> ParsedResponse:
        self.sock.sendall(data)
        while True:
            resp = self.parser.next()
            if resp is not None:
                return resp
            chunk = self.sock.recv(65536)
            if not chunk:
                resp = self.parser.next(eof=True)
                if resp is None:
                    raise ConnectionError("connection closed before the answer")
                return resp
            self.parser.feed(chunk)

    def close(self) -> None:
        self.sock.close()


class Pool:
    """Keep-alive connections per (scheme, host, port), checked out one per request;
    `timeout` bounds every connect, send and receive."""

    def __init__(self, size: int, timeout: float) -> None:
        self._size = size
        self._timeout = timeout
        self._idle: dict[tuple[str, str, int], queue.LifoQueue[_Conn]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def _queue(self, key: tuple[str, str, int]) -> queue.LifoQueue[_Conn]:
        with self._lock:
            q = self._idle.get(key)
            if q is None:
                q = self._idle[key] = queue.LifoQueue(self._size)
            return q

    def _connect(self, scheme: str, host: str, port: int) -> _Conn:
        sock = socket.create_connection((host, port), timeout=self._timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            sock = self._tls.wrap_socket(sock, server_hostname=host)
        return _Conn(sock)

    def send(self, req: Request) -> Response:
        scheme, host, port, data = prepare(req.method, req.url, req.headers, req.body)
        key = (scheme, host, port)
        idle = self._queue(key)
        for fresh in (False, True):
            conn = None
            if not fresh:
                try:
                    conn = idle.get_nowait()
                except queue.Empty:
                    fresh = True
            try:
                if conn is None:
                    conn = self._connect(*key)
                resp = conn.roundtrip(data)
            except TimeoutError as exc:  # the builtin TimeoutError (socket timeouts too)
                if conn is not None:
                    conn.close()
                raise errors.TimeoutError(
                    f"{req.method} {req.url}: no answer in {self._timeout}s"
                ) from exc
            except (OSError, ProtocolError) as exc:
                if conn is not None:
                    conn.close()
                if not fresh:
                    continue  # a pooled connection the server had closed: try a new one
                raise TransportError(f"{req.method} {req.url}: {exc!r}") from exc
            if resp.keep_alive:
                try:
                    idle.put_nowait(conn)
                except queue.Full:
                    conn.close()
            else:
                conn.close()
            return Response(resp.status, resp.headers, resp.body)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            for q in self._idle.values():
                while True:
                    try:
                        q.get_nowait().close()
                    except queue.Empty:
                        break
