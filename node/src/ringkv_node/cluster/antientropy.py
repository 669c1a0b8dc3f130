"""Anti-entropy: replicas compare digests and exchange only what differs.

For each peer, over the partitions both own: compare partition digests (XOR
of bucket digests), then bucket digests of the partitions that differ, then
fetch the peer's records of each differing bucket and reconcile both ways:
newer remote records are applied here, newer local ones are pushed there.
Runs periodically and soon after start-up, so a node that was down or cut
off converges without a full copy. Only buckets that still differ a moment
later, and whose digests did not move meanwhile on either side, are
exchanged: writes in flight make busy buckets differ briefly, and a replica
still applying a backlog changes them under our feet. Those wait for a
later round, which comes soon; so does the round of a node whose own writer
is behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ringkv_node.cluster.peer import Transport
from ringkv_node.cluster.ringstate import RingState
from ringkv_node.model.digests import BUCKETS, combine
from ringkv_node.model.records import Record
from ringkv_node.replica import KV, local_pages, peer_pages

__all__ = ["PUSH_BATCH", "AntiEntropy", "Round", "differing", "exchange", "steady"]

log = logging.getLogger("ringkv.antientropy")


def differing(
    mine: dict[int, list[int]], theirs: dict[int, list[int]], partitions: set[int]
) -> list[tuple[int, int]]:
    """(partition, bucket) pairs whose digests differ, over the given partitions."""
    zero = [0] * BUCKETS
    out: list[tuple[int, int]] = []
    for part in sorted(partitions):
        a, b = mine.get(part, zero), theirs.get(part, zero)
        if combine(a) == combine(b) and a == b:
            continue
        out.extend((part, i) for i in range(BUCKETS) if a[i] != b[i])
    return out


Look = tuple[dict[int, list[int]], dict[int, list[int]], list[tuple[int, int]]]
"""One look at a peer: our digests, theirs, and the buckets that differ."""


def steady(first: Look, second: Look) -> tuple[list[tuple[int, int]], int]:
    """Buckets that differ in both looks with neither side's digest moved in
    between, and how many others differed in both but moved."""
    zero = [0] * BUCKETS
    (mine1, theirs1, diff1), (mine2, theirs2, diff2) = first, second
    both = sorted(set(diff1) & set(diff2))
    out = [
        (part, b)
        for part, b in both
        if mine1.get(part, zero)[b] == mine2.get(part, zero)[b]
        and theirs1.get(part, zero)[b] == theirs2.get(part, zero)[b]
    ]
    return out, len(both) - len(out)


def exchange(
    mine: Mapping[bytes, Record],
    theirs: Mapping[bytes, Record],
    forgotten: Callable[[Record], bool],
) -> tuple[list[tuple[bytes, Record]], list[tuple[bytes, Record]]]:
    """What to pull (newer there or missing here) and push (newer here or missing
    there) for one bucket; records `forgotten` (tombstones past their grace) go
    neither way, or a purge would be undone."""
    pull = [
        (k, r)
        for k, r in theirs.items()
        if (k not in mine or r.version > mine[k].version) and not forgotten(r)
    ]
    push = [
        (k, r)
        for k, r in mine.items()
        if (k not in theirs or r.version > theirs[k].version) and not forgotten(r)
    ]
    return pull, push


PUSH_BATCH = 500  # records a replicate call when pushing


@dataclass
class Round:
    peers: int = 0
    buckets_differing: int = 0
    partitions_differing: set[int] = field(default_factory=set)  # with any peer
    pulled: int = 0
    pushed: int = 0
    failed_peers: list[str] = field(default_factory=list)
    moving: int = 0  # buckets left for a later round: they changed while we looked
    deferred: bool = False  # our writer was behind: no round was run

    @property
    def busy(self) -> bool:
        """Something was left for later: the next round should come soon."""
        return self.deferred or self.moving > 0


class AntiEntropy:
    """Anti-entropy rounds of one node with each peer it shares partitions with.

    `run_round` is the periodic job; `sync_bucket` reconciles one bucket (or a
    whole partition) with one peer, and also serves rebalance streaming's
    catch-up. Keeps what `/v1/status` reports of the last round.
    """

    def __init__(
        self,
        node_id: str,
        kv: KV,
        transport: Transport,
        rings: RingState,
        *,
        clock_ms: Callable[[], int],
        grace_ms: int,
        settle_s: float = 1.0,
    ) -> None:
        self.node_id = node_id
        self.settle_s = settle_s
        self.kv = kv
        self.transport = transport
        self.rings = rings
        self.clock_ms = clock_ms
        self.grace_ms = grace_ms
        self.last: Round | None = None
        self.last_at_ms: int | None = None  # when the last round ended (unix ms)
        self.last_duration_ms: int | None = None  # how long it took
        self._started_ms = 0
        self.out_of_sync = 0  # differing buckets seen in the last round
        self.partitions_out_of_sync = 0  # partitions they were in

    def _expired_tombstone(self, rec: Record) -> bool:
        return rec.tombstone and (rec.version.ts >> 16) + self.grace_ms <= self.clock_ms()

    async def _differing(self, peer: str, shared: set[int]) -> tuple[list[tuple[int, int]], int]:
        """Buckets that differ from `peer`'s now and still differ, unchanged,
        `settle_s` later; and how many differed but changed meanwhile (`steady`).

        Both sides' digests are read at the same moment; a bucket that differs
        only because writes are still landing on one of them is left alone, so
        a busy cluster does not stream whole partitions back and forth.
        """
        looks: list[Look] = []
        for attempt in range(2):
            if attempt:
                await asyncio.sleep(self.settle_s)
            doc = await self.transport.call(peer, "digests", {"partitions": sorted(shared)})
            theirs = {int(p): list(d) for p, d in doc.items()}
            mine = self.kv.storage.bucket_digests()
            now = differing(mine, theirs, shared)
            if not now:
                return [], 0
            looks.append((mine, theirs, now))
        return steady(looks[0], looks[1])

    async def run_round(self) -> Round:
        ring = self.rings.ring
        mine = set(ring.partitions_of(self.node_id))
        result = Round()
        self._started_ms = self.clock_ms()
        if self.kv.storage.backlogged():
            result.deferred = True  # what differs now is mostly our own queue
            return result  # `last` and `out_of_sync` stay those of the last real round
        for peer in ring.member_ids:
            if peer == self.node_id:
                continue
            shared = mine & ring.partitions_of(peer)
            if not shared:
                continue
            result.peers += 1
            try:
                diff, moving = await self._differing(peer, shared)
                result.buckets_differing += len(diff)
                result.moving += moving
                by_part: dict[int, list[int]] = {}
                for part, bucket in diff:
                    by_part.setdefault(part, []).append(bucket)
                result.partitions_differing.update(by_part)
                for part, buckets in by_part.items():
                    if self.rings.ring.epoch != ring.epoch:
                        return self._finish(result)  # ownership moved: start afresh
                    # many differing buckets: one ranged read of the partition is cheaper
                    todo: list[int | None] = [None] if len(buckets) > 4 else list(buckets)
                    for which in todo:
                        pulled, pushed = await self.sync_bucket(peer, part, which)
                        result.pulled += pulled
                        result.pushed += pushed
            except Exception as exc:  # one unreachable peer must not stop the round
                log.debug("anti-entropy with %s failed: %r", peer, exc)
                result.failed_peers.append(peer)
        return self._finish(result)

    def _finish(self, result: Round) -> Round:
        self.last = result
        self.last_at_ms = self.clock_ms()
        self.last_duration_ms = self.last_at_ms - self._started_ms
        self.out_of_sync = result.buckets_differing
        self.partitions_out_of_sync = len(result.partitions_differing)
        return result

    async def sync_bucket(self, peer: str, part: int, bucket: int | None) -> tuple[int, int]:
        """Pull newer records of one bucket (None: the whole partition) from `peer`
        and push ours it lacks."""
        theirs: dict[bytes, Record] = {}
        async for page in peer_pages(self.transport.call, peer, part, bucket):
            theirs.update(page)
        mine: dict[bytes, Record] = {}
        for page in local_pages(self.kv.storage, part, bucket):
            mine.update(page)
        pull, push = exchange(mine, theirs, self._expired_tombstone)
        if pull:
            await self.kv.apply_many(pull)
        for i in range(0, len(push), PUSH_BATCH):
            await self.transport.replicate_many(peer, push[i : i + PUSH_BATCH])
        return len(pull), len(push)
