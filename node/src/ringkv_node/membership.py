"""Membership change on a node: the joining ring, streaming, commit, and drops.

A mixin of `Node` (node.py), kept apart because it is one concern with its
own state: the joining ring (`pending`, persisted so a restart resumes),
which gained partitions are streamed, and when unowned data may go. The
steps are driven from outside (admin API, docs/design.md §7.6).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from ringkv.ring import Ring
from ringkv_node.antientropy import AntiEntropy
from ringkv_node.coordinator import Coordinator
from ringkv_node.errors import ApiError
from ringkv_node.hints import Hints
from ringkv_node.kv import KV
from ringkv_node.quorum import required_acks
from ringkv_node.settings import Settings
from ringkv_node.storage import WriteTxn
from ringkv_node.streaming import catch_up, copy_partition
from ringkv_node.transport import PeerError, Transport

__all__ = ["PENDING_META_KEY", "Membership"]

log = logging.getLogger("ringkv.node")

PENDING_META_KEY = b"pending-ring"


class Membership:
    """The membership-change half of `Node` (which provides these attributes)."""

    settings: Settings
    kv: KV
    transport: Transport
    hints: Hints
    coordinator: Coordinator
    anti_entropy: AntiEntropy
    ring: Ring
    pending: Ring | None
    streamed: set[int]
    stream_errors: dict[int, str]
    unowned_since: dict[int, float]
    _streamer: asyncio.Task[None] | None
    _monotonic: Callable[[], float]

    async def _store_ring(self, ring: Ring) -> None:
        raise NotImplementedError  # Node's

    async def _store_pending(self, streaming: bool) -> None:
        doc = None
        if self.pending is not None:
            doc = {
                "ring": self.pending.to_dict(),
                "streamed": sorted(self.streamed),
                "streaming": streaming,
            }

        def store(wt: WriteTxn) -> None:
            if doc is None:
                wt.delete_meta(PENDING_META_KEY)
            else:
                wt.put_meta(PENDING_META_KEY, json.dumps(doc).encode())

        await self.kv.storage.write(store)

    def member_url(self, member: str) -> str:
        """A member's URL from the current ring, else from the joining one."""
        for ring in (self.ring, self.pending):
            if ring is not None and member in ring.member_ids:
                return ring.member(member).url
        raise KeyError(member)

    # -- membership change (admin) -------------------------------------------------

    def gained(self) -> list[int]:
        """Partitions the joining ring gives this node that it does not own now."""
        if self.pending is None:
            return []
        me = self.settings.node_id
        return sorted(self.pending.partitions_of(me) - self.ring.partitions_of(me))

    async def join(self, ring: Ring) -> str:
        """Install a joining ring: writes go to old and new owners from now on."""
        if ring.partitions != self.ring.partitions:
            raise ApiError(409, "conflict", "the partition count of a cluster never changes")
        if ring.epoch <= self.ring.epoch:
            if ring.epoch == self.ring.epoch and ring == self.ring:
                return "committed"
            raise ApiError(
                409, "stale_epoch", f"epoch {ring.epoch} is not newer than {self.ring.epoch}"
            )
        if self.pending is not None:
            if self.pending == ring:
                return "joining"
            raise ApiError(
                409,
                "conflict",
                f"ring epoch {self.pending.epoch} is already joining; commit or abort it first",
            )
        if ring.epoch != self.ring.epoch + 1:
            raise ApiError(409, "conflict", f"a joining ring must have epoch {self.ring.epoch + 1}")
        self.pending = ring
        self.streamed = set()
        self.stream_errors = {}
        await self._store_pending(streaming=False)
        log.info(
            "ring epoch %d joining (%d partitions to stream here)", ring.epoch, len(self.gained())
        )
        return "joining"

    def start_streaming(self) -> None:
        if self._streamer is None or self._streamer.done():
            self._streamer = asyncio.ensure_future(self._stream_all())

    async def stream(self, epoch: int) -> None:
        """Every node holds the joining ring: copy the gained partitions now."""
        self._expect_pending(epoch)
        await self._store_pending(streaming=True)
        self.start_streaming()

    async def _stream_all(self) -> None:
        """Copy each gained partition, then reconcile it with a quorum of its owners.

        The copy comes from one current owner, which may have missed a write a
        quorum of owners acknowledged (it gets it later by hint). Reconciling
        with a read quorum of the current owners, as anti-entropy does, finds
        every such write before this node may serve reads at commit.
        """
        assert self.pending is not None
        pending = self.pending
        me = self.settings.node_id
        for part in self.gained():
            if part in self.streamed:
                continue
            owners = [o for o in self.ring.owners(part) if o != me]
            needed = required_acks("quorum", len(self.ring.owners(part)))
            attempt = 0
            while self.pending is pending:
                shift = attempt % len(owners)
                order = owners[shift:] + owners[:shift]
                up = [o for o in order if not self.coordinator.transport_down(o)] or order
                reconciled = 0
                errors = []
                try:
                    await copy_partition(self.kv, self.transport, up[0], part)
                except PeerError as exc:
                    errors.append(str(exc))
                else:
                    for owner in up:
                        try:
                            await catch_up(self.anti_entropy, self.transport, owner, part)
                            reconciled += 1
                        except PeerError as exc:
                            errors.append(str(exc))
                if reconciled >= needed or (reconciled and reconciled == len(owners)):
                    self.stream_errors.pop(part, None)
                    self.streamed.add(part)
                    await self._store_pending(streaming=True)
                    break
                self.stream_errors[part] = (
                    f"reconciled with {reconciled} of {len(owners)} owners, need {needed}: "
                    + "; ".join(errors)
                )
                attempt += 1
                await asyncio.sleep(0.5)

    def progress(self) -> dict[str, Any]:
        gained = self.gained()
        done = len([p for p in gained if p in self.streamed])
        return {
            "node_id": self.settings.node_id,
            "epoch": self.ring.epoch,
            "pending_epoch": None if self.pending is None else self.pending.epoch,
            "streaming": self._streamer is not None and not self._streamer.done(),
            "partitions_to_stream": len(gained),
            "partitions_streamed": done,
            "in_sync": self.pending is not None and done == len(gained),
            "pending_ring": None if self.pending is None else self.pending.to_dict(),
            "errors": {str(p): e for p, e in self.stream_errors.items()},
        }

    def _expect_pending(self, epoch: int) -> None:
        if self.pending is None or self.pending.epoch != epoch:
            have = "none" if self.pending is None else str(self.pending.epoch)
            raise ApiError(
                409, "stale_epoch", f"no joining ring epoch {epoch} here (joining: {have})"
            )

    async def commit(self, epoch: int) -> str:
        """The joining ring becomes the ring; drop what this node no longer owns, later."""
        if self.ring.epoch == epoch and self.pending is None:
            return "committed"
        self._expect_pending(epoch)
        assert self.pending is not None
        if self.gained() and len(self.streamed & set(self.gained())) < len(self.gained()):
            raise ApiError(409, "conflict", "this node has not finished streaming")
        ring, self.pending = self.pending, None
        await self._store_ring(ring)
        self.ring = ring
        await self._store_pending(streaming=False)
        for target in list(self.hints.backlog):
            if target not in ring.member_ids:
                self.hints.backlog.pop(target, None)
        self._schedule_drop()
        log.info("ring epoch %d committed", ring.epoch)
        return "committed"

    async def abort(self, epoch: int) -> str:
        if self.pending is None or self.pending.epoch != epoch:
            return "aborted"
        self.pending = None
        if self._streamer is not None:
            self._streamer.cancel()
        await self._store_pending(streaming=False)
        self._schedule_drop()
        log.info("ring epoch %d aborted", epoch)
        return "aborted"

    def _schedule_drop(self) -> None:
        """Partitions this node stopped owning are dropped by `drop_loop`, later."""
        now = self._monotonic()
        for part in self._unowned_with_data():
            self.unowned_since.setdefault(part, now)

    def _unowned_with_data(self) -> list[int]:
        me = self.settings.node_id
        keep = set(self.ring.partitions_of(me))
        if self.pending is not None:
            keep |= self.pending.partitions_of(me)
        digests = self.kv.storage.bucket_digests()
        return [p for p, row in digests.items() if p not in keep and any(row)]

    async def drop_loop(self) -> None:
        """Delete partitions this node has not owned for --drop-delay (also records a
        coordinator with an old ring sent here after the move)."""
        delay = self.settings.drop_delay_s
        while True:
            await asyncio.sleep(min(5.0, max(0.2, delay / 2)))
            now = self._monotonic()
            unowned = set(self._unowned_with_data())
            for part in list(self.unowned_since):
                if part not in unowned:
                    del self.unowned_since[part]
            for part in unowned:
                since = self.unowned_since.setdefault(part, now)
                if now - since < delay:
                    continue
                try:
                    while await self.kv.drop_partition(part, limit=1000) >= 1000:
                        pass
                except Exception:
                    log.exception("dropping partition %d failed", part)
                log.info("dropped partition %d (owned elsewhere now)", part)
