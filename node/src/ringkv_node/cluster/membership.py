"""Membership change on a node: the joining ring, streaming, commit, and drops.

A component of `Node` with its own state: the joining ring (in `RingState`,
persisted so a restart resumes), which gained partitions are streamed, and
when unowned data may go. The steps are driven from outside (admin API,
docs/design.md §7.6); every decision is a pure function of `transitions`,
and this class only keeps the state and does the I/O.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from ringkv.ring import Ring
from ringkv_node.cluster import transitions
from ringkv_node.cluster.antientropy import AntiEntropy
from ringkv_node.cluster.peer import PeerError, Transport
from ringkv_node.cluster.ringstate import PENDING_META_KEY, RingState, save_ring
from ringkv_node.cluster.streaming import catch_up, copy_partition
from ringkv_node.model.quorum import required_acks
from ringkv_node.replica import KV, Hints
from ringkv_node.storage import WriteTxn

__all__ = ["Membership"]

log = logging.getLogger("ringkv.membership")

STREAM_RETRY_S = 0.5  # between two attempts at streaming one partition
DROP_BATCH = 1000  # records deleted a transaction when dropping a partition


class Membership:
    """This node's part in membership changes: join, stream, commit, abort, and
    dropping what it no longer owns, over the shared `RingState`."""

    def __init__(
        self,
        node_id: str,
        kv: KV,
        transport: Transport,
        rings: RingState,
        hints: Hints,
        anti_entropy: AntiEntropy,
        *,
        drop_delay_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = node_id
        self.kv = kv
        self.transport = transport
        self.rings = rings
        self.hints = hints
        self.anti_entropy = anti_entropy
        self.drop_delay_s = drop_delay_s
        self._monotonic = monotonic
        self.streamed: set[int] = set()  # gained partitions copied and caught up
        self.stream_errors: dict[int, str] = {}
        self.unowned_since: dict[int, float] = {}
        self._streamer: asyncio.Task[None] | None = None

    async def resume(self) -> None:
        """After a restart: the joining ring and the streaming progress stored, if any."""
        raw = self.kv.storage.get_meta(PENDING_META_KEY)
        if raw is None:
            return
        doc = json.loads(raw)
        self.rings.pending = Ring.from_dict(doc["ring"])
        self.streamed = set(doc.get("streamed", []))
        if doc.get("streaming"):
            self.start_streaming()

    async def _store_pending(self, streaming: bool) -> None:
        pending = self.rings.pending
        doc = None
        if pending is not None:
            doc = {
                "ring": pending.to_dict(),
                "streamed": sorted(self.streamed),
                "streaming": streaming,
            }

        def store(wt: WriteTxn) -> None:
            if doc is None:
                wt.delete_meta(PENDING_META_KEY)
            else:
                wt.put_meta(PENDING_META_KEY, json.dumps(doc).encode())

        await self.kv.storage.write(store)

    def gained(self) -> list[int]:
        """Partitions the joining ring gives this node that it does not own now."""
        return transitions.gained(self.rings.ring, self.rings.pending, self.node_id)

    async def join(self, ring: Ring) -> str:
        """Install a joining ring: writes go to old and new owners from now on."""
        done = transitions.check_join(self.rings.ring, self.rings.pending, ring)
        if done is not None:
            return done
        self.rings.pending = ring
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
        transitions.expect_pending(self.rings.pending, epoch)
        await self._store_pending(streaming=True)
        self.start_streaming()

    async def _stream_all(self) -> None:
        """Copy each gained partition, then reconcile it with a quorum of its owners.

        The copy comes from one current owner, which may have missed a write a
        quorum of owners acknowledged (it gets it later by hint). Reconciling
        with a read quorum of the current owners, as anti-entropy does, finds
        every such write before this node may serve reads at commit.
        """
        pending = self.rings.pending
        assert pending is not None
        for part in self.gained():
            if part in self.streamed:
                continue
            ring = self.rings.ring
            owners = [o for o in ring.owners(part) if o != self.node_id]
            needed = required_acks("quorum", len(ring.owners(part)))
            attempt = 0
            while self.rings.pending is pending:
                up = transitions.stream_order(owners, attempt, self.transport.is_down)
                reconciled, errors = await self._stream_one(part, up)
                if transitions.stream_done(reconciled, len(owners), needed):
                    self.stream_errors.pop(part, None)
                    self.streamed.add(part)
                    await self._store_pending(streaming=True)
                    break
                self.stream_errors[part] = (
                    f"reconciled with {reconciled} of {len(owners)} owners, need {needed}: "
                    + "; ".join(errors)
                )
                attempt += 1
                await asyncio.sleep(STREAM_RETRY_S)

    async def _stream_one(self, part: int, sources: list[str]) -> tuple[int, list[str]]:
        """Copy `part` from the first source, then catch up with each: how many
        sources it was reconciled with, and what failed."""
        errors = []
        try:
            await copy_partition(self.kv, self.transport, sources[0], part)
        except PeerError as exc:
            return 0, [str(exc)]
        reconciled = 0
        for owner in sources:
            try:
                await catch_up(self.anti_entropy, self.transport, owner, part)
                reconciled += 1
            except PeerError as exc:
                errors.append(str(exc))
        return reconciled, errors

    def streaming(self) -> bool:
        return self._streamer is not None and not self._streamer.done()

    def stop(self) -> None:
        """Stop streaming (what is streamed stays recorded; `resume` goes on)."""
        if self._streamer is not None:
            self._streamer.cancel()

    def progress(self) -> dict[str, Any]:
        rings = self.rings
        return transitions.progress(
            self.node_id,
            rings.ring,
            rings.pending,
            self.streamed,
            self.streaming(),
            self.stream_errors,
        )

    async def commit(self, epoch: int) -> str:
        """The joining ring becomes the ring; drop what this node no longer owns, later."""
        rings = self.rings
        ring = transitions.check_commit(
            rings.ring, rings.pending, epoch, self.streamed, self.node_id
        )
        if ring is None:
            return "committed"
        rings.pending = None
        await save_ring(self.kv.storage, ring)
        rings.ring = ring
        await self._store_pending(streaming=False)
        for target in list(self.hints.backlog):
            if target not in ring.member_ids:
                self.hints.backlog.pop(target, None)
        self._schedule_drop()
        log.info("ring epoch %d committed", ring.epoch)
        return "committed"

    async def abort(self, epoch: int) -> str:
        pending = self.rings.pending
        if pending is None or pending.epoch != epoch:
            return "aborted"
        self.rings.pending = None
        if self._streamer is not None:
            self._streamer.cancel()
        await self._store_pending(streaming=False)
        self._schedule_drop()
        log.info("ring epoch %d aborted", epoch)
        return "aborted"

    def _unowned_with_data(self) -> list[int]:
        rings = self.rings
        return transitions.unowned_with_data(
            rings.ring, rings.pending, self.node_id, self.kv.storage.bucket_digests()
        )

    def _schedule_drop(self) -> None:
        """Partitions this node stopped owning are dropped by `drop_loop`, later."""
        now = self._monotonic()
        for part in self._unowned_with_data():
            self.unowned_since.setdefault(part, now)

    async def drop_due(self) -> list[int]:
        """Delete the partitions this node has not owned for the drop delay."""
        due = transitions.drops_due(
            set(self._unowned_with_data()), self.unowned_since, self._monotonic(), self.drop_delay_s
        )
        for part in due:
            try:
                while await self.kv.drop_partition(part, limit=DROP_BATCH) >= DROP_BATCH:
                    pass
            except Exception:
                log.exception("dropping partition %d failed", part)
            log.info("dropped partition %d (owned elsewhere now)", part)
        return due

    async def drop_loop(self) -> None:
        """Delete partitions this node has not owned for --drop-delay (also records a
        coordinator with an old ring sent here after the move)."""
        while True:
            await asyncio.sleep(min(5.0, max(0.2, self.drop_delay_s / 2)))
            await self.drop_due()
