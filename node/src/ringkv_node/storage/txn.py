"""What a write operation may do inside the shared LMDB transaction (`WriteTxn`).

Storage applies every write of an event-loop turn in one transaction
(`engine`, `groupcommit`); each operation gets this view of it. Every change
goes through here, so the two things LMDB alone does not keep are kept
alongside: the physical changes for the write-ahead log (`redo`), and the
changes to the anti-entropy digests (`digest_delta`, folded into the
in-memory table only after the commit). Keys are laid out as `layout` draws.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any, cast

import lmdb

from ringkv.ring import hashed_partitioner, partitioner
from ringkv_node.model import records
from ringkv_node.model.digests import (
    BUCKETS,
    bucket_of_hash,
    node_hash,
    record_digest,
    record_digest_raw,
    record_hash,
)
from ringkv_node.model.records import Record
from ringkv_node.storage import wal
from ringkv_node.storage.layout import (
    DATA,
    DBS,
    EXPIRY,
    HINTS,
    META,
    PART,
    TOMBS,
    U64,
    data_key,
    hint_key,
    index_key,
)

__all__ = ["WriteOp", "WriteTxn"]


class WriteTxn:
    """What a write operation may do inside the shared transaction.

    Data keys are stored as `partition:u16 + key`, so one partition is one
    range (anti-entropy buckets, rebalance streaming). Digest changes are
    collected here and folded into the in-memory table only after commit.
    """

    __slots__ = (
        "_data",
        "_handles",
        "_locate",
        "_partition_of",
        "_txn",
        "digest_delta",
        "max_ts",
        "redo",
    )

    def __init__(
        self,
        txn: lmdb.Transaction,
        handles: list[Any],
        partitions: int,
    ) -> None:
        self._txn = txn
        self._handles = handles  # by index, as in layout.DBS
        self._data = handles[DATA]
        self._partition_of, self._locate = _partitioners(partitions)
        self.max_ts = 0
        # partition * BUCKETS + bucket -> XOR to fold into that bucket's digest
        self.digest_delta: dict[int, int] = {}
        self.redo: list[wal.Change] = []  # every change made, for the log

    def _put(self, db: int, key: bytes, value: bytes) -> None:
        self._txn.put(key, value, db=self._handles[db])
        self.redo.append((db, key, value))

    def _delete(self, db: int, key: bytes) -> bool:
        deleted = bool(self._txn.delete(key, db=self._handles[db]))
        if deleted:
            self.redo.append((db, key, None))
        return deleted

    def _pkey(self, key: bytes) -> bytes:
        return data_key(self._partition_of(key), key)

    def apply_lww(self, key: bytes, rec: Record) -> tuple[Record | None, bool]:
        """Store `rec` unless a newer version is there: (previous, written)."""
        version = rec.version
        prev, written = self._apply_packed(
            key,
            records.encode(rec),
            version.ts,
            rec.expires_ms,
            rec.tombstone,
            version.node.encode("utf-8"),
        )
        return (None if prev is None else records.decode(prev)), written

    def apply_raw(self, key: bytes, raw: bytes) -> bytes | None:
        """`apply_lww` for a record still packed (a peer's replica batch): the
        previous record, packed as stored. Only headers are read, and the bytes
        are stored as they came: a replica write costs no decode or encode."""
        ts, expires_ms, tombstone, node = records.header(raw)
        return self._apply_packed(key, raw, ts, expires_ms, tombstone, node)[0]

    def apply_raw_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bytes | None]:
        """`apply_raw` of every item (a bulk batch): the previous records, packed,
        in the order of `items`.

        The bulk path, so the per-key work is what Python must do and no more:
        one hash a key (partition and digest bucket, `hashed_partitioner`),
        the stored records read with one `getmulti` and the winners written
        with one `putmulti` in key order (LMDB walks its B-tree in order; both
        loops run in C), and one log entry for all of them (`wal.PutMany`).
        A batch that names a key twice is applied one item after the other
        (`_apply_packed`), so the later item sees the earlier one.

        Records here were checked (`wire.packed_records`) or stamped by this
        node; their headers are read without checking them again.
        """
        locate = self._locate
        pack_part = PART.pack
        pkeys: list[bytes] = []
        cells: list[int] = []
        for key, _ in items:
            part, h = locate(key)
            pkeys.append(pack_part(part) + key)
            cells.append(part * BUCKETS + bucket_of_hash(h))
        n = len(items)
        if len(set(pkeys)) != n:
            return [self.apply_raw(key, raw) for key, raw in items]
        cursor = self._txn.cursor(db=self._data)
        found = cast("dict[bytes, bytes]", dict(cursor.getmulti(pkeys)))
        unpack = records.HEADER.unpack_from
        start = records.HEADER_SIZE
        digest = record_hash
        writer_hash = node_hash
        delta_of = self.digest_delta
        out: list[bytes | None] = [None] * n
        writes: list[tuple[bytes, bytes]] = []
        write = writes.append
        max_ts = self.max_ts
        last_node, last_hash = b"", 0
        for (key, raw), pkey, cell in zip(items, pkeys, cells, strict=True):
            ts, expires_ms, flags, node_len = unpack(raw)
            node = raw[start : start + node_len]
            if node != last_node:
                last_node, last_hash = node, writer_hash(node)
            delta = digest(key, ts) ^ last_hash
            if found:
                prev = found.get(pkey)
                if prev is not None:
                    p_ts, p_expires, p_flags, p_len = unpack(prev)
                    p_node = prev[start : start + p_len]
                    if ts < p_ts or (ts == p_ts and node <= p_node):
                        continue
                    p_tomb = p_flags & records.TOMBSTONE
                    if p_expires or p_tomb:
                        self._unindex(key, p_expires, p_ts if p_tomb else None)
                    delta ^= digest(key, p_ts) ^ writer_hash(p_node)
            write((pkey, raw))
            delta_of[cell] = delta_of.get(cell, 0) ^ delta
            if expires_ms:
                self._put(EXPIRY, index_key(expires_ms, key), b"")
            if flags & records.TOMBSTONE:
                self._put(TOMBS, index_key(ts, key), b"")
            if ts > max_ts:
                max_ts = ts
        self.max_ts = max_ts
        if found:
            out = [found.get(pkey) for pkey in pkeys]
        if writes:
            writes.sort(key=_first)  # by stored key (tuples compared whole cost 3x)
            cursor.putmulti(writes)
            self.redo.append((DATA, writes))
        return out

    def _apply_packed(
        self, key: bytes, raw: bytes, ts: int, expires_ms: int, tombstone: bool, node: bytes
    ) -> tuple[bytes | None, bool]:
        """Last-writer-wins of packed `raw` (header fields given): (previous as
        stored, written).

        `get` + `put` fused for the write hot path: the key is hashed once for
        its partition and bucket, and read and written at one LMDB key; the
        stored record's header alone decides.
        """
        part, key_hash = self._locate(key)
        pkey = PART.pack(part) + key
        txn = self._txn
        prev = cast("bytes | None", txn.get(pkey, db=self._data))
        delta = 0
        if prev is not None:
            p_ts, p_expires, p_tomb, p_node = records.header(prev)
            if ts < p_ts or (ts == p_ts and node <= p_node):
                return prev, False
            if p_expires or p_tomb:
                self._unindex(key, p_expires, p_ts if p_tomb else None)
            delta = record_digest_raw(key, p_ts, p_node)
        txn.put(pkey, raw, db=self._data)
        self.redo.append((DATA, pkey, raw))
        self._note_digest(part, bucket_of_hash(key_hash), delta ^ record_digest_raw(key, ts, node))
        if expires_ms:
            self._put(EXPIRY, index_key(expires_ms, key), b"")
        if tombstone:
            self._put(TOMBS, index_key(ts, key), b"")
        if ts > self.max_ts:
            self.max_ts = ts
        return prev, True

    def get(self, key: bytes) -> Record | None:
        # buffers=False (the default): lmdb hands out bytes, never memoryviews
        raw = cast("bytes | None", self._txn.get(self._pkey(key), db=self._data))
        return None if raw is None else records.decode(raw)

    def remove(self, key: bytes, prev: Record) -> None:
        """Forget `key` entirely (purge): no tombstone is left."""
        self._unindex(key, prev.expires_ms, prev.version.ts if prev.tombstone else None)
        part, key_hash = self._locate(key)
        self._delete(DATA, data_key(part, key))
        self._note_digest(part, bucket_of_hash(key_hash), record_digest(key, prev.version))

    def _note_digest(self, part: int, bucket: int, delta: int) -> None:
        """Fold `delta` into a bucket's digest, for after the commit."""
        cell = part * BUCKETS + bucket
        self.digest_delta[cell] = self.digest_delta.get(cell, 0) ^ delta

    def add_hint(self, target: str, key: bytes, rec: Record) -> None:
        """Remember that `target` missed `rec` (hinted handoff)."""
        self._put(HINTS, hint_key(target, rec.version.ts, key), records.encode(rec))

    def drop_hint(self, hint: bytes) -> bool:
        return self._delete(HINTS, hint)

    def _unindex(self, key: bytes, expires_ms: int, tombstone_ts: int | None) -> None:
        """Drop the purge-index entries of the record stored at `key` (its expiry,
        0 for none; its timestamp if it is a tombstone)."""
        if expires_ms:
            self._delete(EXPIRY, index_key(expires_ms, key))
        if tombstone_ts is not None:
            self._delete(TOMBS, index_key(tombstone_ts, key))

    def put_meta(self, name: bytes, value: bytes) -> None:
        self._put(META, name, value)

    def delete_meta(self, name: bytes) -> None:
        self._delete(META, name)

    def partition_keys(self, part: int, limit: int) -> list[tuple[bytes, Record]]:
        """Up to `limit` records of one partition, in key order (for dropping it)."""
        prefix = PART.pack(part)
        out: list[tuple[bytes, Record]] = []
        with self._txn.cursor(db=self._data) as cur:
            if not cur.set_range(prefix):
                return out
            for item in cur.iternext():
                pkey, raw = cast("tuple[bytes, bytes]", item)
                if not pkey.startswith(prefix) or len(out) >= limit:
                    break
                out.append((pkey[2:], records.decode(raw)))
        return out

    def due(self, index: str, upto: int, limit: int) -> list[tuple[int, bytes]]:
        """Index entries (`expiry` or `tombs`) with a stamp <= upto, oldest first."""
        out: list[tuple[int, bytes]] = []
        with self._txn.cursor(db=self._handles[DBS.index(index)]) as cur:
            for ikey in cur.iternext(keys=True, values=False):
                stamp = U64.unpack_from(ikey)[0]
                if stamp > upto or len(out) >= limit:
                    break
                out.append((stamp, bytes(ikey[8:])))
        return out

    def drop_index(self, index: str, stamp: int, key: bytes) -> None:
        self._delete(DBS.index(index), index_key(stamp, key))


WriteOp = Callable[[WriteTxn], Any]

_first = operator.itemgetter(0)


@functools.cache
def _partitioners(
    partitions: int,
) -> tuple[Callable[[bytes], int], Callable[[bytes], tuple[int, int]]]:
    """A node's partition function and `hashed_partitioner` (one pair a Q)."""
    return partitioner(partitions), hashed_partitioner(partitions)
