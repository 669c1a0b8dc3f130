"""The node's cluster side: ring, coordinator, hints, anti-entropy, membership, status.

The ring is loaded from LMDB, or on first start built (epoch 1) from the
peers every node was given, so all nodes agree without talking. A newer ring
seen on any peer (its epoch travels on every internal response) is fetched,
checked and installed: gossip by piggyback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ringkv.ring import Member, Ring, initial_ring
from ringkv.versions import Version
from ringkv_node import __version__
from ringkv_node.cluster import transitions
from ringkv_node.cluster.antientropy import AntiEntropy
from ringkv_node.cluster.coordinator import Coordinator
from ringkv_node.cluster.membership import Membership
from ringkv_node.cluster.peer import PeerError, Transport
from ringkv_node.cluster.ringstate import RingState, load_ring, save_ring
from ringkv_node.errors import ApiError
from ringkv_node.metrics import Metrics
from ringkv_node.model.quorum import ListingEntry, Page, merge_pages
from ringkv_node.replica import KV, Hints
from ringkv_node.settings import Settings

__all__ = ["Node", "ring_from_settings"]

log = logging.getLogger("ringkv.node")

BUSY_RETRY_S = 5.0  # next anti-entropy round after one that left buckets for later
# One log write and fsync running this long means the disk has stalled: the
# node says it is not ready, so Services stop sending it clients (one takes
# milliseconds).
WRITER_STALL_S = 10.0


def ring_from_settings(settings: Settings) -> Ring:
    members = [Member(p.id, p.url, p.zone) for p in settings.peers]
    return initial_ring(members, settings.partitions, settings.replication_factor)


class Node:
    """One storage node's cluster side, wired from its parts.

    It owns the ring state (shared with the transport), the replica's hints,
    the coordinator (any key's reads and writes), anti-entropy and
    membership changes; it loads and gossips the ring, lists keys across the
    cluster, and reports readiness and status. The HTTP layer calls it; it
    knows nothing of HTTP.
    """

    def __init__(
        self,
        settings: Settings,
        kv: KV,
        metrics: Metrics,
        transport: Transport,
        *,
        rings: RingState | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.kv = kv
        self.metrics = metrics
        self.transport = transport
        self._monotonic = monotonic
        self._started = monotonic()
        self.rings = RingState(ring_from_settings(settings)) if rings is None else rings
        self.rings.watch(self.epoch_seen)
        self.hints = Hints(kv.storage)
        node_id = settings.node_id
        self.coordinator = Coordinator(node_id, kv, transport, self.hints, self.rings)
        self.anti_entropy = AntiEntropy(
            node_id,
            kv,
            transport,
            self.rings,
            clock_ms=kv.clock_ms,
            grace_ms=int(settings.tombstone_grace_s * 1000),
        )
        self.membership = Membership(
            node_id,
            kv,
            transport,
            self.rings,
            self.hints,
            self.anti_entropy,
            drop_delay_s=settings.drop_delay_s,
            monotonic=monotonic,
        )
        self.ready = False
        self.draining = False
        self._fetching_ring = False
        self._tasks: set[asyncio.Future[None]] = set()

    @property
    def ring(self) -> Ring:
        return self.rings.ring

    # -- ring ----------------------------------------------------------------

    async def load_ring(self) -> None:
        """The ring stored in LMDB; else a peer's ring (joining a running cluster,
        this node then owns nothing until a rebalance); else the epoch-1 ring
        every node builds alike from --peers (a new cluster)."""
        stored = load_ring(self.kv.storage)
        if stored is not None:
            self.rings.ring = stored
            await self.membership.resume()
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
                self.rings.ring = found
                break
        self.transport.forget_failures()  # peers that were still starting are not down
        if self.settings.node_id not in self.ring.member_ids:
            log.info(
                "not a member of ring epoch %d: owning nothing until a rebalance adds this node",
                self.ring.epoch,
            )
        await save_ring(self.kv.storage, self.ring)

    async def install_ring(self, ring: Ring) -> bool:
        """Adopt `ring` if it is newer than ours; refuse a different Q."""
        if not transitions.check_install(self.ring, ring):
            return False
        await save_ring(self.kv.storage, ring)
        self.rings.ring = ring
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
        except (PeerError, ValueError, transitions.MembershipError) as exc:
            log.warning("could not fetch the newer ring from %s: %s", peer, exc)
        finally:
            self._fetching_ring = False

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
            "pending_epoch": None if self.rings.pending is None else self.rings.pending.epoch,
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
