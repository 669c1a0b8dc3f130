"""One long-lived WebSocket per peer for the hot internal calls (replicate, read).

An HTTP request per replica batch costs more CPU than the batch itself (the
aiohttp client and server machinery, headers, a response per request). The
channel multiplexes calls over one WebSocket on the same port and route
family (`/internal/v1/ws`, same token): each message is msgpack
`{id, call, doc, epoch}`, answered by `{id, ok | error, epoch}`. Answers may
come back in any order. A broken channel fails every call waiting on it and is
reopened by the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

import aiohttp

from ringkv_node import wire

__all__ = ["Channel", "ChannelError"]

MAX_MESSAGE = 64 * 1024 * 1024


class ChannelError(Exception):
    """The call got no answer: connection failed or closed, or the peer refused it."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused  # the peer answered with an error (it is up)


class Channel:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        headers: dict[str, str],
        on_epoch: Callable[[int], None],
    ) -> None:
        self._session = session
        self._url = url + "/internal/v1/ws"
        self._headers = headers
        self._on_epoch = on_epoch
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._connecting = asyncio.Lock()

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        async with self._connecting:
            if self._ws is None or self._ws.closed:
                self._ws = await self._session.ws_connect(
                    self._url, headers=self._headers, max_msg_size=MAX_MESSAGE, autoping=True
                )
                self._reader = asyncio.ensure_future(self._read(self._ws))
            return self._ws

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    continue
                doc = wire.loads(msg.data)
                epoch = doc.get("epoch")
                if isinstance(epoch, int):
                    self._on_epoch(epoch)
                fut = self._pending.pop(doc.get("id", 0), None)
                if fut is None or fut.done():
                    continue
                if "error" in doc:
                    fut.set_exception(ChannelError(str(doc["error"]), refused=True))
                else:
                    fut.set_result(doc.get("ok"))
        except Exception:
            pass
        finally:
            self._fail_all("channel closed")

    def _fail_all(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ChannelError(why))

    async def call(self, name: str, doc: Any, epoch: int, timeout_s: float) -> Any:
        try:
            ws = await asyncio.wait_for(self._open(), timeout_s)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ChannelError(f"cannot open a channel: {exc!r}") from None
        ident = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = fut
        try:
            await ws.send_bytes(wire.dumps({"id": ident, "call": name, "doc": doc, "epoch": epoch}))
            return await asyncio.wait_for(fut, timeout_s)
        except (ConnectionError, aiohttp.ClientError) as exc:
            raise ChannelError(f"send failed: {exc!r}") from None
        finally:
            self._pending.pop(ident, None)

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._fail_all("channel closed")
