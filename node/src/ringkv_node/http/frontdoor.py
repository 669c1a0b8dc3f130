"""The fast lane: the node's listener, serving key routes without aiohttp.

aiohttp costs about 50 µs a request on this hardware, more than the whole
LMDB lookup, so a node answering through it alone cannot come near its
throughput targets. Every connection therefore starts here, with a small
asyncio protocol that parses requests with `http1` and answers
`GET/PUT/DELETE /v1/kv/{key}` through `dataplane`, the same functions the
aiohttp handlers call. The first request of any other shape or route (or one
`http1` does not accept) hands the connection, with the bytes not yet
answered, to aiohttp for the rest of its life; aiohttp answers it exactly as
it would have without the fast lane. Requests on one connection are served
one at a time, in order (HTTP/1.1 pipelining keeps its order). The one
upgrade taken here is a peer's link (`peerlink`); other upgrades are
aiohttp's.

`FrontSite` plugs this into aiohttp's runner, so start-up and the SIGTERM
drain order stay aiohttp's: stop listening, finish in-flight fast-lane
requests, then aiohttp's own shutdown and `cleanup_ctx`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import parse_qsl

from aiohttp import web

from ringkv_node.errors import ApiError
from ringkv_node.http import dataplane, http1
from ringkv_node.http.appkeys import METRICS_KEY, NODE_KEY
from ringkv_node.http.dataplane import Reply
from ringkv_node.http.responses import json_bytes
from ringkv_node.net import peerlink

__all__ = ["FrontDoor", "FrontSite"]

KEEPALIVE_S = 75.0  # an idle connection is closed after this long (aiohttp's default)
_HIGH_WATER = 1 << 20  # stop reading from a connection with this much unanswered input
_ROUTE = "/v1/kv/{key}"
_PEER_ROUTE = peerlink.PATH
_NO_QUERY: dict[str, str] = {}


def _query(text: str) -> dict[str, str]:
    query: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        query.setdefault(name, value)  # the first wins, as in aiohttp
    return query


class FrontDoor:
    """The protocol factory for the node's port; one `_Conn` per connection."""

    def __init__(self, app: web.Application, fallback: Callable[[], asyncio.Protocol]) -> None:
        self.fallback = fallback
        self.conns: set[_Conn] = set()
        self.links: set[peerlink.PeerServer] = set()  # peers' links into this node
        node = app[NODE_KEY]
        settings = node.settings
        self.node = node
        self.rings = node.rings
        self.metrics = app[METRICS_KEY]
        self.max_body = settings.limits.max_value_bytes
        self.body_timeout_s = settings.body_timeout_s
        self.fields: http1.FieldCache = {}  # header blocks clients repeat, parsed once
        self.token = settings.token
        self.open = settings.token is None or not settings.data_auth
        self.stopping = False
        self._drained = asyncio.Event()  # set when stopping and the last connection is gone
        self._date = ""
        self._date_s = 0

    def __call__(self) -> _Conn:
        return _Conn(self)

    def forget(self, conn: _Conn) -> None:
        self.conns.discard(conn)
        if self.stopping and not self.conns:
            self._drained.set()

    def date(self) -> str:
        now = int(time.time())
        if now != self._date_s:
            self._date_s, self._date = now, http1.http_date(now)
        return self._date

    def answer(self, req: http1.Request) -> dataplane.Answer | None:
        """The reply (or coroutine making it) for a fast-lane request; None: not ours."""
        method = req.method
        if method != "GET" and method != "PUT" and method != "DELETE":
            return None
        path, _, query_text = req.target.partition("?")
        if not path.startswith(dataplane.KV_PREFIX) or len(path) == len(dataplane.KV_PREFIX):
            return None
        if not self.open:
            dataplane.check_auth(req.headers.get("authorization"), "data", self.token, True)
        query = _query(query_text) if query_text else _NO_QUERY
        if method == "GET":
            return dataplane.get_key(self.node, path, query)
        if method == "PUT":
            return dataplane.put_key(self.node, path, query, req.body)
        return dataplane.delete_key(self.node, path, query)

    def render(
        self, req: http1.Request, reply: Reply, started: float, route: str = _ROUTE
    ) -> bytes:
        self.metrics.observe_request(route, req.method, reply.status, time.perf_counter() - started)
        extra = f"X-Ringkv-Epoch: {self.rings.ring.epoch}\r\n"
        if reply.version is not None:
            extra += f"X-Ringkv-Version: {reply.version}\r\n"
        if reply.expires:
            extra += f"X-Ringkv-Expires: {reply.expires}\r\n"
        keep_alive = req.keep_alive and not self.stopping
        head = http1.response_head(
            reply.status, reply.content_type, len(reply.body), extra, self.date(), keep_alive
        )
        return head + reply.body

    def error(
        self, req: http1.Request, exc: Exception, started: float, route: str = _ROUTE
    ) -> bytes:
        err = dataplane.api_error(exc, f"{req.method} {req.target}")
        body = json_bytes(err.body())
        return self.render(req, Reply(err.status, body, "application/json"), started, route)

    async def sweep(self, interval_s: float = 10.0) -> None:
        """Close connections idle for longer than the keep-alive timeout, and
        answer a request not received whole within `--body-timeout` with a 408
        (a request waits here whole before it is answered or handed to aiohttp,
        so a client that stops part way held its connection for good)."""
        loop = asyncio.get_running_loop()
        interval_s = min(interval_s, self.body_timeout_s / 2)
        while True:
            await asyncio.sleep(interval_s)
            now = loop.time()
            idle_since = now - KEEPALIVE_S
            stalled_since = now - self.body_timeout_s
            for conn in list(self.conns):
                if conn.task is not None:
                    continue
                if conn.partial_since is not None and conn.partial_since < stalled_since:
                    conn.time_out(self.body_timeout_s)
                elif conn.last_active < idle_since:
                    conn.close()

    async def stop(self, timeout_s: float) -> None:
        """Finish in-flight requests, then close every fast-lane connection."""
        self.stopping = True
        for link in list(self.links):  # peers hint what they cannot send now
            link.close()
        for conn in list(self.conns):
            if conn.task is None:
                conn.close()
        if self.conns:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout_s)
        for conn in list(self.conns):
            conn.abort()


class _Conn(asyncio.Protocol):
    __slots__ = (
        "buf",
        "door",
        "last_active",
        "loop",
        "partial_since",
        "paused",
        "task",
        "transport",
    )

    def __init__(self, door: FrontDoor) -> None:
        self.door = door
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.task: asyncio.Future[Any] | None = None  # what the request being answered awaits
        self.paused = False
        self.loop = asyncio.get_running_loop()
        self.last_active = self.loop.time()
        self.partial_since: float | None = None  # since when `buf` holds part of a request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass it
        self.transport = transport
        if self.door.stopping:
            transport.close()
            return
        self.door.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.door.forget(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.task is None:
            self.serve()
        elif len(self.buf) > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def serve(self) -> None:
        """Answer every complete request in the buffer, in order."""
        door = self.door
        out: list[bytes] = []
        while self.transport is not None and self.buf:
            req = http1.parse_request(self.buf, 0, door.max_body, door.fields)
            if req is None:
                break
            if req is http1.UNSUPPORTED:
                self._flush(out)
                self._hand_over()
                return
            assert isinstance(req, http1.Request)
            started = time.perf_counter()
            if "upgrade" in req.headers:
                self._flush(out)
                self._upgrade(req, started)
                return
            answer: dataplane.Answer | bytes | None
            try:
                answer = door.answer(req)
            except Exception as exc:
                answer = door.error(req, exc, started)
            if answer is None:
                self._flush(out)
                self._hand_over()
                return
            del self.buf[: req.end]
            self.partial_since = None
            if isinstance(answer, bytes):
                out.append(answer)
            elif isinstance(answer, Reply):
                out.append(door.render(req, answer, started))
            else:
                waiting = answer.future
                waiting.add_done_callback(
                    functools.partial(self._done, finish=answer.finish, req=req, started=started)
                )
                self.task = waiting
                break
            if not req.keep_alive or door.stopping:
                self._flush(out)
                self.close()
                return
        self._flush(out)
        self.last_active = self.loop.time()
        if not self.buf or self.task is not None:
            self.partial_since = None
        elif self.partial_since is None:  # part of a request: it has --body-timeout to come
            self.partial_since = self.last_active

    def _done(
        self,
        waited: asyncio.Future[Any],
        *,
        finish: Callable[[Any], Reply],
        req: http1.Request,
        started: float,
    ) -> None:
        self.task = None
        door = self.door
        if waited.cancelled():
            data = door.error(req, ApiError(503, "unavailable", "node is shutting down"), started)
        elif (exc := waited.exception()) is not None:
            data = door.error(req, exc if isinstance(exc, Exception) else Exception(exc), started)
        else:
            try:
                data = door.render(req, finish(waited.result()), started)
            except Exception as failure:  # e.g. DELETE of an absent key: 404
                data = door.error(req, failure, started)
        if self.transport is None:
            return  # the client went away; the write itself is done or hinted
        self.transport.write(data)
        if not req.keep_alive or door.stopping:
            self.close()
            return
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        self.serve()

    def _upgrade(self, req: http1.Request, started: float) -> None:
        """A peer link (`peerlink`) for the cluster's own calls; other upgrades go to aiohttp."""
        door = self.door
        transport = self.transport
        assert transport is not None
        if not (
            req.method == "GET"
            and req.target == peerlink.PATH
            and req.headers["upgrade"] == peerlink.UPGRADE
        ):
            self._hand_over()
            return
        try:
            dataplane.check_auth(req.headers.get("authorization"), "always", door.token, True)
        except ApiError as exc:
            transport.write(door.error(req._replace(keep_alive=False), exc, started, _PEER_ROUTE))
            self.close()
            return
        del self.buf[: req.end]
        door.metrics.observe_request(_PEER_ROUTE, "GET", 101, time.perf_counter() - started)
        transport.write(peerlink.upgrade_answer(door.rings.ring.epoch))
        self._switch(
            peerlink.PeerServer(
                door.node.kv, door.rings, req.headers.get("x-ringkv-node", ""), door.links
            )
        )

    def _flush(self, out: list[bytes]) -> None:
        if out and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _hand_over(self) -> None:
        """Give the connection, and what it sent that is not answered yet, to aiohttp."""
        self._switch(self.door.fallback())

    def _switch(self, proto: asyncio.Protocol) -> None:
        """Let `proto` serve the connection from here on, starting with the unread bytes."""
        transport = self.transport
        assert transport is not None
        self.door.forget(self)
        self.transport = None
        if self.paused:
            self.paused = False
            transport.resume_reading()
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if self.buf:
            data, self.buf = bytes(self.buf), bytearray()
            proto.data_received(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def time_out(self, timeout_s: float) -> None:
        """Answer the request not received whole with a 408, and close."""
        if self.transport is None:
            return
        body = json_bytes(
            {
                "error": "request_timeout",
                "message": f"the request did not arrive whole within {timeout_s:g} s",
            }
        )
        head = http1.response_head(408, "application/json", len(body), "", self.door.date(), False)
        self.transport.write(head + body)
        self.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        if self.task is not None:
            self.task.cancel()


class FrontSite(web.BaseSite):
    """An aiohttp site listening with the fast lane in front of the app's handler."""

    __slots__ = ("_door", "_host", "_port", "_sweeper", "_timeout_s")

    def __init__(self, runner: web.AppRunner, host: str, port: int, timeout_s: float) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._timeout_s = timeout_s
        self._door: FrontDoor | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def door(self) -> FrontDoor | None:
        return self._door

    async def start(self) -> None:
        await super().start()
        runner = self._runner
        assert isinstance(runner, web.AppRunner)
        assert runner.server is not None
        door = FrontDoor(runner.app, runner.server)
        self._door = door
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            door, self._host, self._port, backlog=self._backlog, reuse_address=True
        )
        self._sweeper = asyncio.create_task(door.sweep(), name="keepalive-sweep")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._door is not None:
            await self._door.stop(self._timeout_s)
        await super().stop()
