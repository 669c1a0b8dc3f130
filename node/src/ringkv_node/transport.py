"""How a node talks to its peers: the `Transport` seam and its HTTP implementation.

The coordinator, hinted handoff and anti-entropy only see `Transport`; tests
drive them over a fake network that can drop, delay and partition, and the
node runs them over `HttpTransport`: pooled keep-alive aiohttp connections,
with replica writes and reads to each peer coalesced by `Batcher`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import aiohttp

from ringkv.ring import Ring
from ringkv_node import wire
from ringkv_node.batcher import Batcher
from ringkv_node.peerlink import Channel, ChannelError
from ringkv_node.records import Record

__all__ = ["HttpTransport", "PeerError", "Transport"]


class PeerError(Exception):
    """A peer did not answer, or answered with an error."""

    def __init__(self, peer: str, message: str) -> None:
        super().__init__(f"{peer}: {message}")
        self.peer = peer


class Transport(Protocol):
    def replicate(self, peer: str, key: bytes, rec: Record) -> Awaitable[Record | None]:
        """Apply `rec` on `peer`; resolves to what it held before (coalesced)."""

    async def replicate_many(
        self, peer: str, items: Sequence[tuple[bytes, Record]]
    ) -> list[Record | None]:
        """Apply all `items` on `peer` in one request and one transaction."""

    def replicate_raw(
        self, peer: str, items: Sequence[tuple[bytes, bytes]]
    ) -> Awaitable[list[bytes | None]]:
        """Apply packed records on `peer` in one call and one transaction (the
        bulk path); resolves to what it held before, packed."""

    def read(self, peer: str, key: bytes) -> Awaitable[Record | None]:
        """`peer`'s record for `key`, tombstones included (coalesced)."""

    async def call(self, peer: str, name: str, doc: Any) -> Any:
        """Any other internal call (`scan`, `digests`, `bucket`, `ping`)."""


class HttpTransport:
    """`Transport` over HTTP/1.1 keep-alive to each peer's `/internal/v1/...`."""

    def __init__(
        self,
        node_id: str,
        get_ring: Callable[[], Ring],
        member_url: Callable[[str], str],
        token: str | None,
        *,
        timeout_s: float = 2.0,
        down_for_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._get_ring = get_ring
        self._member_url = member_url
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
        self.epoch_seen: Callable[[str, int], None] | None = None

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
            url = self._member_url(peer)
        except KeyError:
            raise PeerError(peer, "not a member of the ring") from None
        epoch = str(self._get_ring().epoch)
        try:
            async with self._http().post(
                f"{url}/internal/v1/{name}",
                data=wire.dumps(doc),
                headers={"X-Ringkv-Epoch": epoch},
            ) as resp:
                body = await resp.read()
                peer_epoch = resp.headers.get("X-Ringkv-Epoch")
                if peer_epoch and peer_epoch.isdigit() and self.epoch_seen is not None:
                    self.epoch_seen(peer, int(peer_epoch))
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
                url = self._member_url(peer)
            except KeyError:
                raise PeerError(peer, "not a member of the ring") from None

            def on_epoch(epoch: int) -> None:
                if self.epoch_seen is not None:
                    self.epoch_seen(peer, epoch)

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
        call = channel.call_now(name, doc, self._get_ring().epoch, self._timeout_s)
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
        return self._stream_now(peer, "replicate", [[key, raw] for key, raw in items])

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
