"""Peer links: one long-lived TCP connection per peer for the hot internal calls.

Replica writes and quorum reads are most of a cluster's work, and every
framework layer on their path costs CPU that the data does not need. A node
opens one link to each peer on the peer's normal port with an HTTP/1.1
upgrade (`GET /internal/v1/peer`, `Upgrade: ringkv-peer/1`, the cluster
token), which the peer's fast lane (`frontdoor`) accepts. After
`101 Switching Protocols` both sides exchange `wire` frames: calls
`{id, call, doc, epoch}`, with `call` one of the peer calls of `peer_service`,
answered by `{id, ok | error, epoch}`, in any order. A replica answers reads
at once and writes when their commit's future resolves, without a task per
message. A broken link fails every call waiting on it; the next call opens a
new one.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

from ringkv.digits import is_digits
from ringkv_node.cluster import RingState
from ringkv_node.model import wire
from ringkv_node.model.pending import Pending
from ringkv_node.replica import KV, serve_now

__all__ = ["PATH", "UPGRADE", "Channel", "ChannelError", "PeerServer", "upgrade_answer"]

log = logging.getLogger("ringkv.peerlink")

PATH = "/internal/v1/peer"
UPGRADE = "ringkv-peer/1"


class ChannelError(Exception):
    """The call got no answer: connection failed or closed, or the peer refused it."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused  # the peer answered with an error (it is up)


def upgrade_answer(epoch: int) -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        f"Connection: Upgrade\r\nUpgrade: {UPGRADE}\r\nX-Ringkv-Epoch: {epoch}\r\n\r\n"
    ).encode()


# -- the replica's side ---------------------------------------------------------


class PeerServer(asyncio.Protocol):
    """Answers one peer's calls on a connection the fast lane upgraded.

    It sees only what a replica answers with: the replica (`kv`), and the
    ring state, for the epoch it stamps on every answer and to pass on a
    newer epoch a caller shows.
    """

    def __init__(self, kv: KV, rings: RingState, peer: str, links: set[PeerServer]) -> None:
        self.kv = kv
        self.rings = rings
        self.peer = peer
        self.links = links
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.links.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.links.discard(self)
        self.transport = None

    def pause_writing(self) -> None:  # the peer reads slowly: stop taking calls
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            docs = wire.take_frames(self.buf)
        except wire.FrameError as exc:
            log.warning("closing the link from %s: %s", self.peer or "a peer", exc)
            self.close()
            return
        for doc in docs:
            if isinstance(doc, dict):
                self._call(doc)

    def _call(self, doc: dict[str, Any]) -> None:
        epoch = doc.get("epoch")
        if self.peer and isinstance(epoch, int):
            self.rings.saw_epoch(self.peer, epoch)
        ident = doc.get("id")
        try:
            answer = serve_now(self.kv, str(doc.get("call")), doc.get("doc"))
        except ValueError as exc:
            self._reply(ident, error=str(exc))
            return
        except Exception as exc:
            log.exception("peer call %r failed", doc.get("call"))
            self._reply(ident, error=f"internal error: {exc!r}")
            return
        if isinstance(answer, Pending):
            answer.future.add_done_callback(
                functools.partial(self._later, ident=ident, finish=answer.finish)
            )
        else:
            self._reply(ident, ok=answer)

    def _later(self, fut: asyncio.Future[Any], *, ident: Any, finish: Callable[[Any], Any]) -> None:
        if fut.cancelled():
            self._reply(ident, error="cancelled: the node is stopping")
        elif (exc := fut.exception()) is not None:
            self._reply(ident, error=f"internal error: {exc!r}")
        else:
            self._reply(ident, ok=finish(fut.result()))

    def _reply(self, ident: Any, *, ok: Any = None, error: str | None = None) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # the caller is gone; it hints or retries
        doc: dict[str, Any] = {"id": ident, "epoch": self.rings.ring.epoch}
        if error is None:
            doc["ok"] = ok
        else:
            doc["error"] = error
        self.transport.write(wire.frame(doc))


# -- the caller's side ------------------------------------------------------------


class _Link(asyncio.Protocol):
    def __init__(self, on_epoch: Callable[[int], None]) -> None:
        self.on_epoch = on_epoch
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ready.add_done_callback(_retrieve)  # a caller that timed out no longer awaits it
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.buf = bytearray()
        self.upgraded = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._fail("channel closed" if self.upgraded else "channel closed during the upgrade")

    def _fail(self, why: str, *, refused: bool = False) -> None:
        if not self.ready.done():
            self.ready.set_exception(ChannelError(why, refused=refused))
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ChannelError(why))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self._fail("channel closed")

    def send(self, data: bytes) -> None:
        if self.transport is None:
            raise ChannelError("channel closed")
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded and not self._handshake():
            return
        try:
            docs = wire.take_frames(self.buf)
        except wire.FrameError as exc:
            self._fail(f"bad frame from the peer: {exc}")
            self.close()
            return
        for doc in docs:
            self._answer(doc)

    def _handshake(self) -> bool:
        """True once upgraded; refuse the link if the peer answered anything else."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buf[:end]).decode("latin-1")
        status = head.split(" ", 2)[1] if head.count(" ") >= 1 else ""
        if status == "101":
            del self.buf[: end + 4]
            self.upgraded = True
            self.ready.set_result(None)
            return True
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length" and is_digits(value.strip()):
                length = int(value.strip())
        if len(self.buf) < end + 4 + min(length, 4096):
            return False  # wait for the error body: it says why
        body = bytes(self.buf[end + 4 : end + 4 + min(length, 4096)])
        self._fail(f"peer refused the channel: {head.splitlines()[0]} {body[:200]!r}", refused=True)
        self.close()
        return False

    def _answer(self, doc: Any) -> None:
        if not isinstance(doc, dict):
            return
        epoch = doc.get("epoch")
        if isinstance(epoch, int):
            self.on_epoch(epoch)
        fut = self.pending.pop(doc.get("id", 0), None)
        if fut is None or fut.done():
            return
        if "error" in doc:
            fut.set_exception(ChannelError(str(doc["error"]), refused=True))
        else:
            fut.set_result(doc.get("ok"))


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _forget(link: _Link, ident: int, timer: asyncio.TimerHandle, fut: asyncio.Future[Any]) -> None:
    timer.cancel()
    link.pending.pop(ident, None)


def _expire(fut: asyncio.Future[Any], timeout_s: float) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError(f"no answer within {timeout_s}s"))


class Channel:
    """Calls to one peer over its link, opened on first use and after a failure."""

    def __init__(self, url: str, headers: dict[str, str], on_epoch: Callable[[int], None]) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._request = (
            f"GET {PATH} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Connection: Upgrade\r\nUpgrade: {UPGRADE}\r\n"
            + "".join(
                f"{name}: {value}\r\n"
                for name, value in headers.items()
                if name.lower() in ("authorization", "x-ringkv-node")
            )
            + "\r\n"
        ).encode()
        self._on_epoch = on_epoch
        self._link: _Link | None = None
        self._ids = itertools.count(1)
        self._connecting = asyncio.Lock()

    async def _open(self) -> _Link:
        async with self._connecting:
            link = self._link
            if link is None or link.closed:
                loop = asyncio.get_running_loop()
                _, link = await loop.create_connection(
                    lambda: _Link(self._on_epoch), self._host, self._port
                )
                link.send(self._request)
                try:
                    await link.ready
                except BaseException:
                    link.close()
                    raise
                self._link = link
            return link

    async def open(self, timeout_s: float) -> None:
        """Open the link unless it is open (ChannelError if that fails in time)."""
        link = self._link
        if link is None or link.closed:
            try:
                await asyncio.wait_for(self._open(), timeout_s)
            except (OSError, TimeoutError) as exc:
                raise ChannelError(f"cannot open a channel: {exc!r}") from None

    def call_now(
        self, name: str, doc: Any, epoch: int, timeout_s: float
    ) -> asyncio.Future[Any] | None:
        """A call on the open link, as a future of the answer; None when the link is not open."""
        link = self._link
        if link is None or link.closed:
            return None
        ident = next(self._ids)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        link.pending[ident] = fut
        timer = loop.call_later(timeout_s, _expire, fut, timeout_s)
        fut.add_done_callback(functools.partial(_forget, link, ident, timer))
        try:
            link.send(wire.frame({"id": ident, "call": name, "doc": doc, "epoch": epoch}))
        except ChannelError as exc:
            fut.set_exception(exc)
        return fut

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
