"""Keep-alive HTTP/1.1 connections for `AsyncClient`, one small protocol each.

A general HTTP client costs several times more CPU per request than the
request itself needs; this pool only sends what `_h11` builds and parses
what comes back. Up to `limit` connections per node, reused while the node
keeps them open; every request has a deadline (`timeout`) for connecting,
sending and the whole answer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from typing import cast

from ringkv._h11 import ParsedResponse, ProtocolError, ResponseParser, prepare

__all__ = ["ConnectionLostError", "Pool"]


class ConnectionLostError(ConnectionError):
    """The connection failed or closed before the whole answer came."""


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.waiter: asyncio.Future[ParsedResponse] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            try:
                resp = self.parser.next(eof=True)
            except ProtocolError as err:
                self.waiter.set_exception(ConnectionLostError(str(err)))
                return
            if resp is None:
                self.waiter.set_exception(ConnectionLostError(f"connection closed: {exc!r}"))
            else:
                self.waiter.set_result(resp)

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        if self.waiter is None or self.waiter.done():
            return  # nothing asked: an answer nobody waits for is dropped with the connection
        try:
            resp = self.parser.next()
        except ProtocolError as exc:
            self.waiter.set_exception(ConnectionLostError(str(exc)))
            self.close()
            return
        if resp is not None:
            self.waiter.set_result(resp)

    def send(self, data: bytes) -> asyncio.Future[ParsedResponse]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    def __init__(self, limit: int, timeout: float) -> None:
        self._limit = limit
        self._timeout = timeout
        self._idle: dict[tuple[str, int], deque[_Conn]] = {}
        self._slots: dict[tuple[str, int], asyncio.Semaphore] = {}
        self._all: set[_Conn] = set()

    async def request(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]
    ) -> ParsedResponse:
        """The answer; `TimeoutError` past the deadline, `ConnectionError` on failure."""
        _, host, port, data = prepare(method, url, headers, body)
        async with asyncio.timeout(self._timeout):
            slots = self._slots.get((host, port))
            if slots is None:
                slots = self._slots[(host, port)] = asyncio.Semaphore(self._limit)
            async with slots:
                conn = await self._connection(host, port)
                waiter = conn.send(data)
                try:
                    resp = await waiter
                except BaseException:
                    conn.close()
                    self._all.discard(conn)
                    raise
                finally:
                    conn.waiter = None
                if resp.keep_alive and not conn.closed:
                    self._idle.setdefault((host, port), deque()).append(conn)
                else:
                    conn.close()
                    self._all.discard(conn)
                return resp

    async def _connection(self, host: str, port: int) -> _Conn:
        idle = self._idle.get((host, port))
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
            self._all.discard(conn)
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Conn, host, port)
        self._all.add(conn)
        return conn

    async def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing
