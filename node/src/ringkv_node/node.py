"""The node's cluster state: ring, coordinator, hints, anti-entropy, and status.

The ring is loaded from LMDB, or on first start built (epoch 1) from the
peers every node was given, so all nodes agree without talking. A newer ring
seen on any peer (its epoch travels on every internal response) is fetched,
checked and installed: gossip by piggyback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ringkv.ring import Member, Ring, initial_ring
from ringkv.versions import Version
from ringkv_node import __version__
from ringkv_node.antientropy import AntiEntropy
from ringkv_node.coordinator import Coordinator
from ringkv_node.errors import ApiError
from ringkv_node.hints import Hints
from ringkv_node.kv import KV
from ringkv_node.membership import PENDING_META_KEY, Membership
from ringkv_node.metrics import Metrics
from ringkv_node.quorum import ListingEntry, Page, merge_pages
from ringkv_node.settings import Settings
from ringkv_node.storage import WriteTxn
from ringkv_node.transport import PeerError, Transport

__all__ = ["RING_META_KEY", "Node"]

log = logging.getLogger("ringkv.node")

RING_META_KEY = b"ring"
BUSY_RETRY_S = 5.0  # next anti-entropy round after one that left buckets for later
# One log write and fsync running this long means the disk has stalled: the
# node says it is not ready, so Services stop sending it clients (one takes
# milliseconds).
WRITER_STALL_S = 10.0


def ring_from_settings(settings: Settings) -> Ring:
    members = [Member(p.id, p.url, p.zone) for p in settings.peers]
    return initial_ring(members, settings.partitions, settings.replication_factor)


class Node(Membership):
    def __init__(
        self,
        settings: Settings,
        kv: KV,
        metrics: Metrics,
        transport: Transport,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.kv = kv
        self.metrics = metrics
        self.transport = transport
        self._monotonic = monotonic
        self._started = monotonic()
        self.ring: Ring = ring_from_settings(settings)
        self.hints = Hints(kv.storage)
        self.pending: Ring | None = None  # a joining ring (epoch + 1), until commit or abort
        self.streamed: set[int] = set()  # gained partitions copied and caught up
        self.stream_errors: dict[int, str] = {}
        self._streamer: asyncio.Task[None] | None = None
        self.unowned_since: dict[int, float] = {}
        self.coordinator = Coordinator(
            settings.node_id, kv, transport, self.hints, lambda: self.ring, lambda: self.pending
        )
        self.anti_entropy = AntiEntropy(
            settings.node_id,
            kv,
            transport,
            lambda: self.ring,
            clock_ms=kv.clock_ms,
            grace_ms=int(settings.tombstone_grace_s * 1000),
        )
        self.ready = False
        self.draining = False
        self._fetching_ring = False
        self._tasks: set[asyncio.Future[None]] = set()

    # -- ring ----------------------------------------------------------------

    async def load_ring(self) -> None:
        """The ring stored in LMDB; else a peer's ring (joining a running cluster,
        this node then owns nothing until a rebalance); else the epoch-1 ring
        every node builds alike from --peers (a new cluster)."""
        raw = self.kv.storage.get_meta(RING_META_KEY)
        if raw is not None:
            self.ring = Ring.from_dict(json.loads(raw))
            pending = self.kv.storage.get_meta(PENDING_META_KEY)
            if pending is not None:
                doc = json.loads(pending)
                self.pending = Ring.from_dict(doc["ring"])
                self.streamed = set(doc.get("streamed", []))
                if doc.get("streaming"):
                    self.start_streaming()
            return
        for peer in self.ring.member_ids:
            if peer == self.settings.node_id:
                continue
            try:
                found = Ring.from_dict(await self.transport.call(peer, "ring", {}))
            except (PeerError, ValueError):
                continue
            if found.partitions == self.ring.partitions:
                log.info("joined the ring of %s (epoch %d)", peer, found.epoch)
                self.ring = found
                break
        forget = getattr(self.transport, "forget_failures", None)
        if forget is not None:
            forget()  # peers that were still starting are not down
        if self.settings.node_id not in self.ring.member_ids:
            log.info(
                "not a member of ring epoch %d: owning nothing until a rebalance adds this node",
                self.ring.epoch,
            )
        await self._store_ring(self.ring)

    async def _store_ring(self, ring: Ring) -> None:
        data = json.dumps(ring.to_dict()).encode()

        def store(wt: WriteTxn) -> None:
            wt.put_meta(RING_META_KEY, data)

        await self.kv.storage.write(store)

    async def install_ring(self, ring: Ring) -> bool:
        """Adopt `ring` if it is newer than ours; refuse a different Q."""
        if ring.epoch <= self.ring.epoch:
            return False
        if ring.partitions != self.ring.partitions:
            raise ApiError(409, "conflict", "a ring with a different partition count")
        await self._store_ring(ring)
        self.ring = ring
        log.info("installed ring epoch %d", ring.epoch)
        return True

    def epoch_seen(self, peer: str, epoch: int) -> None:
        if epoch > self.ring.epoch and not self._fetching_ring:
            self._fetching_ring = True
            task = asyncio.ensure_future(self._fetch_ring(peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _fetch_ring(self, peer: str) -> None:
        try:
            doc = await self.transport.call(peer, "ring", {})
            await self.install_ring(Ring.from_dict(doc))
        except (PeerError, ValueError, ApiError) as exc:
            log.warning("could not fetch the newer ring from %s: %s", peer, exc)
        finally:
            self._fetching_ring = False

    def check_single_partition(self, keys: Sequence[bytes]) -> None:
        parts = {self.ring.partition_of(k) for k in keys}
        if len(parts) > 1:
            raise ApiError.bad_request(
                "atomic batch keys must share one partition: give them a common hash tag, "
                "e.g. user:{42}:name and user:{42}:email",
                "not_single_partition",
            )

    # -- cluster-wide listing ---------------------------------------------------

    async def list_keys(
        self, prefix: bytes, start_after: bytes | None, limit: int, *, deleted: bool = False
    ) -> tuple[list[bytes], bytes | None]:
        ring = self.ring
        members = [m for m in ring.member_ids if ring.partitions_of(m)]
        doc = {"prefix": prefix, "start_after": start_after, "limit": limit + 1}

        async def one(member: str) -> Page:
            if member == self.settings.node_id:
                entries, full = self.kv.scan_entries(prefix, start_after, limit + 1)
                return Page(entries, full)
            out = await self.transport.call(member, "scan", doc)
            entries = [
                ListingEntry(k, Version(ts, node), live) for k, ts, node, live in out["entries"]
            ]
            return Page(entries, bool(out["full"]))

        results = await asyncio.gather(*(one(m) for m in members), return_exceptions=True)
        pages: list[Page] = []
        failed: set[str] = set()
        for member, result in zip(members, results, strict=True):
            if isinstance(result, Page):
                pages.append(result)
            elif isinstance(result, PeerError):
                failed.add(member)
            else:
                raise result
        if failed:
            uncovered = [p for p in range(ring.partitions) if set(ring.owners(p)) <= failed]
            if uncovered:
                raise ApiError(
                    503,
                    "unavailable",
                    f"cannot list keys: every owner of {len(uncovered)} partitions is "
                    f"unreachable ({', '.join(sorted(failed))})",
                )
        return merge_pages(pages, limit, deleted=deleted)

    # -- readiness and status --------------------------------------------------

    def not_ready_reasons(self) -> list[str]:
        reasons = []
        if self.draining:
            reasons.append("shutting down")
        if not self.ready:
            reasons.append("starting: storage or ring not loaded")
        if self.kv.storage.closed:
            reasons.append("storage closed")
        failed = self.kv.storage.failed()
        if failed is not None:
            reasons.append(f"storage refuses writes: {failed}")
        stalled = self.kv.storage.commit_running_s()
        if stalled > WRITER_STALL_S:
            reasons.append(f"storage writer stalled: one commit has run for {stalled:.0f} s")
        return reasons

    def refresh_gauges(self) -> None:
        st = self.kv.storage.stats()
        m = self.metrics
        m.keys.set(st.entries)
        m.tombstones.set(st.tombstones)
        m.storage_used.set(st.used_bytes)
        m.storage_map.set(st.map_size)
        m.log_bytes.set(st.log_bytes)
        m.checkpoint_age.set(st.checkpoint_age_s)
        m.ring_epoch.set(self.ring.epoch)
        for target in self.ring.member_ids:
            m.hints_pending.labels(target).set(self.hints.backlog.get(target, 0))
        m.coordinated.counts["owner"] = self.coordinator.coordinated - self.coordinator.forwarded
        m.coordinated.counts["forwarded"] = self.coordinator.forwarded
        m.out_of_sync.set(self.anti_entropy.out_of_sync)

    def status(self) -> dict[str, Any]:
        st = self.kv.storage.stats()
        owned = sorted(self.ring.partitions_of(self.settings.node_id))
        ae = self.anti_entropy
        return {
            "node_id": self.settings.node_id,
            "version": __version__,
            "advertise_url": self.settings.advertise_url,
            "epoch": self.ring.epoch,
            "pending_epoch": None if self.pending is None else self.pending.epoch,
            "partitions": self.ring.partitions,
            "replication_factor": self.ring.replication_factor,
            "members": list(self.ring.member_ids),
            "partitions_owned": len(owned),
            "durability": self.settings.durability,
            "ready": not self.not_ready_reasons(),
            "uptime_s": round(self._monotonic() - self._started, 3),
            "storage": {
                "entries": st.entries,  # live + tombstones
                "live": st.entries - st.tombstones,
                "tombstones": st.tombstones,
                "used_bytes": st.used_bytes,
                "map_size": st.map_size,
                "readers_used": st.readers_used,
                "max_readers": st.max_readers,
                "write_backlog": self.kv.storage.backlog(),
                "log_bytes": st.log_bytes,
                "checkpoint_age_s": round(st.checkpoint_age_s, 3),
            },
            "hints": {"backlog": dict(self.hints.backlog), "replayed": self.hints.replayed},
            "anti_entropy": {
                "last_round_at_ms": ae.last_at_ms,
                "last_round_duration_ms": ae.last_duration_ms,
                "buckets_out_of_sync": ae.out_of_sync,
                "partitions_out_of_sync": ae.partitions_out_of_sync,
                "buckets_moving": ae.last.moving if ae.last else 0,
                "last_pulled": ae.last.pulled if ae.last else 0,
                "last_pushed": ae.last.pushed if ae.last else 0,
            },
            "requests": {
                "coordinated": self.coordinator.coordinated,
                "forwarded": self.coordinator.forwarded,
            },
            "hlc": self.kv.hlc.last,
        }

    # -- background work ---------------------------------------------------------

    async def hint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.hint_interval_s)
            for target, count in list(self.hints.backlog.items()):
                if count <= 0 or target not in self.ring.member_ids:
                    continue
                try:
                    n = await self.hints.replay(target, self.transport)
                    if n:
                        log.info("hinted handoff: delivered %d writes to %s", n, target)
                except PeerError:
                    pass
                except Exception:
                    log.exception("hint replay to %s failed", target)

    async def anti_entropy_loop(self) -> None:
        await asyncio.sleep(min(2.0, self.settings.anti_entropy_interval_s))
        interval = self.settings.anti_entropy_interval_s
        while True:
            soon = False
            try:
                result = await self.anti_entropy.run_round()
                soon = result.busy
                if result.pulled or result.pushed:
                    log.info(
                        "anti-entropy: %d buckets differed, pulled %d, pushed %d",
                        result.buckets_differing,
                        result.pulled,
                        result.pushed,
                    )
            except Exception:
                log.exception("anti-entropy round failed")
            # left work for later (writes were landing): come back soon, not in 30 s
            await asyncio.sleep(min(interval, BUSY_RETRY_S) if soon else interval)
