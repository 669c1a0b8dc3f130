"""Key-value semantics of one replica on top of storage: LWW, TTL, tombstones.

The HTTP layer calls this; it calls `Storage`. Every write is a `Record`
applied last-writer-wins, so the same function serves a local write, a
replicated one and a repair. The clock is injected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from ringkv.versions import HLC, Version
from ringkv_node.model import records
from ringkv_node.model.ops import BatchOp
from ringkv_node.model.quorum import ListingEntry
from ringkv_node.model.records import Record, is_live
from ringkv_node.storage import Storage, WriteTxn

__all__ = ["KV", "Applied"]


class Applied(NamedTuple):
    """Outcome of applying one record: what was there, and whether it was written."""

    previous: Record | None
    applied: bool
    record: Record


def _apply_in(wt: WriteTxn, key: bytes, rec: Record) -> Applied:
    prev, written = wt.apply_lww(key, rec)
    return Applied(prev, written, rec)


class KV:
    """One replica's keys: reads that hide what is deleted or expired, records
    stamped with this node's clock, last-writer-wins apply (local writes,
    replica writes, repairs and streaming alike), and purging.

    Writes return futures or coroutines of the group-committed storage: a
    result means the write is durable.
    """

    def __init__(
        self,
        storage: Storage,
        node_id: str,
        *,
        clock_ms: Callable[[], int],
        tombstone_grace_ms: int,
    ) -> None:
        self.storage = storage
        self.node_id = node_id
        self.clock_ms = clock_ms
        self.hlc = HLC(clock_ms, floor=storage.hlc_floor())
        self.tombstone_grace_ms = tombstone_grace_ms

    # -- reads ---------------------------------------------------------------

    def get(self, key: bytes) -> Record | None:
        """The live record for `key`, or None (absent, deleted or expired)."""
        rec = self.storage.get(key)
        return rec if is_live(rec, self.clock_ms()) else None

    def scan_entries(
        self, prefix: bytes, start_after: bytes | None, limit: int
    ) -> tuple[list[ListingEntry], bool]:
        """Up to `limit` entries (live or not, with versions) for a cluster listing."""
        if start_after is not None and start_after >= prefix:
            start, inclusive = start_after, False
        else:
            start, inclusive = prefix, True
        now = self.clock_ms()
        out: list[ListingEntry] = []
        for key, rec in self.storage.scan(start, inclusive=inclusive, limit=limit):
            if not key.startswith(prefix):
                return out, False
            out.append(ListingEntry(key, rec.version, is_live(rec, now)))
        return out, len(out) >= limit

    # -- writes --------------------------------------------------------------

    def stamp(
        self,
        value: bytes,
        ttl_s: int | None,
        *,
        tombstone: bool = False,
        expires_ms: int | None = None,
    ) -> Record:
        """A new record, versioned now; it expires `ttl_s` from now, or at `expires_ms`."""
        ts = self.hlc.now()
        if expires_ms is not None:
            expires = expires_ms
        else:
            expires = 0 if ttl_s is None else (ts >> 16) + ttl_s * 1000
        return Record(Version(ts, self.node_id), value, tombstone, expires)

    def stamp_op(self, op: BatchOp) -> Record:
        """The record a batch op writes."""
        return self.stamp(op.value, op.ttl_s, tombstone=op.op == "delete", expires_ms=op.expires_ms)

    def stamp_packed(self, ops: Sequence[BatchOp]) -> tuple[list[tuple[bytes, bytes]], list[int]]:
        """`stamp_op` of every op, packed (the bulk path: no `Record` per op, one
        clock reading for the batch, `HLC.now_many`): the (key, packed record)
        pairs and their timestamps, consecutive in the order of `ops`."""
        node = self.node_id.encode("utf-8")
        first = self.hlc.now_many(len(ops))
        stamps = list(range(first, first + len(ops)))
        pack = records.pack
        items: list[tuple[bytes, bytes]] = []
        add = items.append
        for op, ts in zip(ops, stamps, strict=True):
            kind, key, value, ttl_s, expires_ms = op
            if expires_ms is None:
                expires_ms = 0 if ttl_s is None else (ts >> 16) + ttl_s * 1000
            if kind == "delete":
                add((key, pack(ts, expires_ms, True, node, b"")))
            else:
                add((key, pack(ts, expires_ms, False, node, value)))
        return items, stamps

    async def apply(self, key: bytes, rec: Record) -> Applied:
        """Store `rec` if it is newer than what is there (durable on return)."""
        self.hlc.observe(rec.version.ts)
        applied: Applied = await self.storage.write(lambda wt: _apply_in(wt, key, rec))
        return applied

    def enqueue_apply(self, key: bytes, rec: Record) -> asyncio.Future[Record | None]:
        """Apply `rec`, stamped here (no clock to fold in); the future resolves to
        the previous record once durable."""
        return self.storage.enqueue(lambda wt: wt.apply_lww(key, rec)[0])

    async def apply_many(self, items: Sequence[tuple[bytes, Record]]) -> list[Applied]:
        """Apply several records in one transaction (a replica batch, or an atomic one)."""
        result: list[Applied] = await self.enqueue_many(items)
        return result

    def enqueue_many(self, items: Sequence[tuple[bytes, Record]]) -> asyncio.Future[Any]:
        """`apply_many` as a future of the list of `Applied` (no coroutine)."""
        for _, rec in items:
            self.hlc.observe(rec.version.ts)
        return self.storage.enqueue(lambda wt: [_apply_in(wt, k, r) for k, r in items])

    def enqueue_raw(self, items: Sequence[tuple[bytes, bytes]], max_ts: int) -> asyncio.Future[Any]:
        """Apply packed records (a peer's replica batch) last-writer-wins in one
        transaction; the future resolves to the previous records, packed.
        `max_ts`: their newest timestamp, folded into the clock once."""
        self.hlc.observe(max_ts)
        return self.storage.enqueue(lambda wt: wt.apply_raw_many(items))

    async def drop_partition(self, part: int, limit: int) -> int:
        """Forget up to `limit` records of a partition this node no longer owns."""

        def op(wt: WriteTxn) -> int:
            rows = wt.partition_keys(part, limit)
            for key, rec in rows:
                wt.remove(key, rec)
            return len(rows)

        dropped: int = await self.storage.write(op)
        return dropped

    async def purge(self, limit: int = 1000) -> int:
        """Drop expired keys and tombstones past their grace period; return how many."""
        now = self.clock_ms()
        grace = self.tombstone_grace_ms
        purged: int = await self.storage.write(lambda wt: _purge_in(wt, now, grace, limit))
        return purged


def _purge_in(wt: WriteTxn, now_ms: int, grace_ms: int, limit: int) -> int:
    purged = 0
    for stamp, key in wt.due("expiry", now_ms, limit):
        rec = wt.get(key)
        if rec is not None and rec.expires_ms == stamp and not is_live(rec, now_ms):
            wt.remove(key, rec)
            purged += 1
        else:
            wt.drop_index("expiry", stamp, key)
    # Tombstone index stamps are HLC timestamps: compare in the same units.
    for stamp, key in wt.due("tombs", (now_ms - grace_ms) << 16, limit):
        rec = wt.get(key)
        if rec is not None and rec.tombstone and rec.version.ts == stamp:
            wt.remove(key, rec)
            purged += 1
        else:
            wt.drop_index("tombs", stamp, key)
    return purged
