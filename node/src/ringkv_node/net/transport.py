"""How a node talks to its peers: `HttpTransport`, the network side of the peer seam.

The cluster logic only sees `ringkv_node.cluster.peer.Transport`; this is the
implementation the node runs: replica writes and reads coalesced per peer by
`Batcher` and sent over the peer's long-lived link (`peerlink`), everything
else as pooled keep-alive HTTP calls to `/internal/v1/...`. Every answer's
epoch goes to the node's `RingState`, which is how a newer ring spreads.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from ringkv.digits import is_digits
from ringkv_node.cluster import PeerError, RingState
from ringkv_node.model import wire
from ringkv_node.model.records import Record
from ringkv_node.net.batcher import Batcher
from ringkv_node.net.peerlink import Channel, ChannelError

__all__ = ["HttpTransport"]


class HttpTransport:
    """`Transport` over each peer's link, and HTTP/1.1 keep-alive for the other calls."""

    def __init__(
        self,
        node_id: str,
        rings: RingState,
        token: str | None,
        *,
        timeout_s: float = 2.0,
        down_for_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rings = rings
        self._headers = {"Content-Type": wire.CONTENT_TYPE, "X-Ringkv-Node": node_id}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(1.0, timeout_s))
        self._down_for = down_for_s
        self._monotonic = monotonic
        self._down_until: dict[str, float] = {}
        self._session: aiohttp.ClientSession | None = None
        self._writers: dict[str, Batcher[tuple[bytes, Record], Record | None]] = {}
        self._readers: dict[str, Batcher[bytes, Record | None]] = {}
        self._channels: dict[str, Channel] = {}
        self._timeout_s = timeout_s

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=16, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=self._headers
            )
        return self._session

    async def close(self) -> None:
        for writer in self._writers.values():
            await writer.close()
        for reader in self._readers.values():
            await reader.close()
        for channel in self._channels.values():
            channel.close()
        if self._session is not None:
            await self._session.close()

    def forget_failures(self) -> None:
        """Forget which peers failed (after start-up, when they were still starting)."""
        self._down_until.clear()

    def is_down(self, peer: str) -> bool:
        until = self._down_until.get(peer)
        return until is not None and self._monotonic() < until

    async def _post(self, peer: str, name: str, doc: Any) -> Any:
        if self.is_down(peer):
            raise PeerError(peer, "marked down after a recent failure")
        try:
            url = self._rings.member_url(peer)
        except KeyError:
            raise PeerError(peer, "not a member of the ring") from None
        epoch = str(self._rings.ring.epoch)
        try:
            async with self._http().post(
                f"{url}/internal/v1/{name}",
                data=wire.dumps(doc),
                headers={"X-Ringkv-Epoch": epoch},
            ) as resp:
                body = await resp.read()
                peer_epoch = resp.headers.get("X-Ringkv-Epoch")
                if peer_epoch and is_digits(peer_epoch):
                    self._rings.saw_epoch(peer, int(peer_epoch))
                if resp.status != 200:
                    raise PeerError(peer, f"{name} answered {resp.status}: {body[:200]!r}")
        except TimeoutError as exc:  # slow is not down: do not skip it next time
            raise PeerError(peer, f"{name} timed out: {exc!r}") from None
        except (aiohttp.ClientError, OSError) as exc:
            # refused or reset: skip this peer (hint instead) for a moment
            self._down_until[peer] = self._monotonic() + self._down_for
            raise PeerError(peer, f"{name} failed: {exc!r}") from None
        self._down_until.pop(peer, None)
        return wire.loads(body)

    def _channel(self, peer: str) -> Channel:
        channel = self._channels.get(peer)
        if channel is None:
            try:
                url = self._rings.member_url(peer)
            except KeyError:
                raise PeerError(peer, "not a member of the ring") from None

            on_epoch = functools.partial(self._rings.saw_epoch, peer)
            channel = self._channels[peer] = Channel(url, self._headers, on_epoch)
        return channel

    async def _stream(self, peer: str, name: str, doc: Any) -> Any:
        """A call over the peer's link (`peerlink`: one connection, multiplexed),
        opening the link first when it is not open."""
        if self.is_down(peer):
            raise PeerError(peer, "marked down after a recent failure")
        channel = self._channel(peer)
        try:
            await channel.open(self._timeout_s)
        except ChannelError as exc:
            raise self._failed(peer, name, channel, exc) from None
        sent = self._stream_on(channel, peer, name, doc)
        if sent is None:
            raise PeerError(peer, f"{name} failed: the channel closed as it opened")
        return await sent

    def _stream_now(self, peer: str, name: str, doc: Any) -> asyncio.Future[Any]:
        """`_stream` as a future: no coroutine or task when the link is open (the hot path)."""
        channel = self._channels.get(peer)
        if channel is not None and not self.is_down(peer):
            sent = self._stream_on(channel, peer, name, doc)
            if sent is not None:
                return sent
        return asyncio.ensure_future(self._stream(peer, name, doc))

    def _stream_on(
        self, channel: Channel, peer: str, name: str, doc: Any
    ) -> asyncio.Future[Any] | None:
        call = channel.call_now(name, doc, self._rings.ring.epoch, self._timeout_s)
        if call is None:
            return None
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        call.add_done_callback(functools.partial(self._answered, answer, channel, peer, name))
        return answer

    def _answered(
        self,
        answer: asyncio.Future[Any],
        channel: Channel,
        peer: str,
        name: str,
        call: asyncio.Future[Any],
    ) -> None:
        error = None if call.cancelled() else call.exception()  # always retrieve it
        if answer.done():
            return
        if call.cancelled():
            answer.cancel()
        elif error is None:
            self._down_until.pop(peer, None)
            answer.set_result(call.result())
        elif isinstance(error, TimeoutError | ChannelError):
            answer.set_exception(self._failed(peer, name, channel, error))
        else:
            answer.set_exception(error)

    def _failed(self, peer: str, name: str, channel: Channel, error: Exception) -> PeerError:
        """The PeerError for a failed call; a broken link is dropped and the peer
        skipped for a moment (a slow answer or a refusal is not a broken link)."""
        if isinstance(error, TimeoutError):
            return PeerError(peer, f"{name} timed out: {error!r}")
        if isinstance(error, ChannelError) and not error.refused:
            self._down_until[peer] = self._monotonic() + self._down_for
            if self._channels.get(peer) is channel:
                del self._channels[peer]
            channel.close()
        return PeerError(peer, f"{name} failed: {error}")

    async def replicate_many(
        self, peer: str, items: Sequence[tuple[bytes, Record]]
    ) -> list[Record | None]:
        return _records(await self._stream_now(peer, "replicate", wire.encode_records(items)))

    def replicate_raw(self, peer: str, items: Sequence[tuple[bytes, bytes]]) -> asyncio.Future[Any]:
        # (key, raw) tuples pack as msgpack arrays: the [[key, record], ...] of `wire`
        return self._stream_now(peer, "replicate", items)

    def replicate(self, peer: str, key: bytes, rec: Record) -> asyncio.Future[Record | None]:
        batcher = self._writers.get(peer)
        if batcher is None:

            def send(items: list[tuple[bytes, Record]]) -> asyncio.Future[Any]:
                return self._stream_now(peer, "replicate", wire.encode_records(items))

            batcher = self._writers[peer] = Batcher(send, _records)
        return batcher.enqueue((key, rec))

    def read(self, peer: str, key: bytes) -> asyncio.Future[Record | None]:
        batcher = self._readers.get(peer)
        if batcher is None:

            def send(keys: list[bytes]) -> asyncio.Future[Any]:
                return self._stream_now(peer, "read", keys)

            batcher = self._readers[peer] = Batcher(send, _records)
        return batcher.enqueue(key)

    async def call(self, peer: str, name: str, doc: Any) -> Any:
        return await self._post(peer, name, doc)


def _records(doc: Any) -> list[Record | None]:
    """A peer's answer to `replicate` or `read`: one record (or None) per item."""
    return [wire.maybe_record(raw) for raw in doc]
