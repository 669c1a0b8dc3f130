"""LMDB storage: the one module that imports `lmdb`.

Rules kept here (py-lmdb docs on threads and transactions):
- one writer thread owns every write transaction (`GroupCommitter`), so
  concurrent writes share one transaction and one fsync;
- reads run on the caller's thread in short transactions that are always
  closed by a `with` block before anything else happens (a transaction left
  referenced by an exception keeps an LMDB reader slot; under load that ends
  in MDB_READERS_FULL);
- the map size is a setting, and a full map is a `StorageFullError` for the
  writes of that batch (HTTP 507), never a crash.

Sub-databases: `data` (partition:u16 + key -> packed Record: a partition is
one range), `meta` (HLC high-water mark, ring), `expiry` (expires_ms:u64 +
key, TTL index), `tombs` (ts:u64 + key, tombstone index) so purges never scan
the data, and `hints`. Anti-entropy digests are kept in memory, updated after
each commit, and rebuilt from the data when the storage opens.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import lmdb
import xxhash

from ringkv.ring import hash_tag, partitioner
from ringkv_node import records
from ringkv_node.digests import BUCKETS, bucket_of, record_digest, record_digest_raw
from ringkv_node.groupcommit import GroupCommitter, Outcome
from ringkv_node.records import Record

__all__ = [
    "BACKLOG_LIMIT",
    "OpRefusedError",
    "Storage",
    "StorageError",
    "StorageFullError",
    "StorageStats",
    "WriteTxn",
]

_U64 = struct.Struct(">Q")
_PART = struct.Struct(">H")
_HLC_KEY = b"hlc"
_BUCKET_MASK = BUCKETS - 1
_xxh64 = xxhash.xxh64_intdigest
_DBS = ("data", "meta", "expiry", "tombs", "hints")

# Writes queued for the writer thread beyond which it counts as behind. Each
# transaction takes everything queued, and a node's clients and peers keep a
# few dozen writes in flight, so a queue this deep is the writer losing
# ground, not a burst; below it, nothing waits on it.
BACKLOG_LIMIT = 128


class StorageError(RuntimeError):
    """The storage engine failed; the writes of the batch were not applied."""


class StorageFullError(StorageError):
    """The LMDB map is full (raise --map-size); the write was not applied."""


class OpRefusedError(Exception):
    """An operation declined to write; raised before it touched the transaction."""


@dataclass(frozen=True, slots=True)
class StorageStats:
    entries: int
    map_size: int
    used_bytes: int
    readers_used: int
    max_readers: int


class WriteTxn:
    """What a write operation may do inside the shared transaction.

    Data keys are stored as `partition:u16 + key`, so one partition is one
    range (anti-entropy buckets, rebalance streaming). Digest changes are
    collected here and folded into the in-memory table only after commit.
    """

    __slots__ = ("_data", "_dbs", "_partition_of", "_shift", "_txn", "digest_delta", "max_ts")

    def __init__(
        self,
        txn: lmdb.Transaction,
        dbs: dict[str, Any],
        partition_of: Callable[[bytes], int],
        shift: int,
    ) -> None:
        self._txn = txn
        self._dbs = dbs
        self._data = dbs["data"]
        self._partition_of = partition_of
        self._shift = shift
        self.max_ts = 0
        self.digest_delta: dict[tuple[int, int], int] = {}

    def _pkey(self, key: bytes) -> bytes:
        return _PART.pack(self._partition_of(key)) + key

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

    def _apply_packed(
        self, key: bytes, raw: bytes, ts: int, expires_ms: int, tombstone: bool, node: bytes
    ) -> tuple[bytes | None, bool]:
        """Last-writer-wins of packed `raw` (header fields given): (previous as
        stored, written).

        `get` + `put` fused for the write hot path: the key is hashed once for
        its partition and bucket, and read and written at one LMDB key; the
        stored record's header alone decides.
        """
        h = _xxh64(key)
        tag = hash_tag(key)
        part = (h if tag is key else _xxh64(tag)) >> self._shift
        pkey = _PART.pack(part) + key
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
        self._note_digest(part, h & _BUCKET_MASK, delta ^ record_digest_raw(key, ts, node))
        if expires_ms:
            txn.put(_U64.pack(expires_ms) + key, b"", db=self._dbs["expiry"])
        if tombstone:
            txn.put(_U64.pack(ts) + key, b"", db=self._dbs["tombs"])
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
        part = self._partition_of(key)
        self._txn.delete(_PART.pack(part) + key, db=self._data)
        self._note_digest(part, bucket_of(key), record_digest(key, prev.version))

    def _note_digest(self, part: int, bucket: int, delta: int) -> None:
        """Fold `delta` into a bucket's digest, for after the commit."""
        dkey = (part, bucket)
        self.digest_delta[dkey] = self.digest_delta.get(dkey, 0) ^ delta

    def add_hint(self, target: str, key: bytes, rec: Record) -> None:
        """Remember that `target` missed `rec` (hinted handoff)."""
        hkey = target.encode() + b"\x00" + _U64.pack(rec.version.ts) + key
        self._txn.put(hkey, records.encode(rec), db=self._dbs["hints"])

    def drop_hint(self, hint_key: bytes) -> bool:
        return bool(self._txn.delete(hint_key, db=self._dbs["hints"]))

    def _unindex(self, key: bytes, expires_ms: int, tombstone_ts: int | None) -> None:
        """Drop the purge-index entries of the record stored at `key` (its expiry,
        0 for none; its timestamp if it is a tombstone)."""
        if expires_ms:
            self._txn.delete(_U64.pack(expires_ms) + key, db=self._dbs["expiry"])
        if tombstone_ts is not None:
            self._txn.delete(_U64.pack(tombstone_ts) + key, db=self._dbs["tombs"])

    def put_meta(self, name: bytes, value: bytes) -> None:
        self._txn.put(name, value, db=self._dbs["meta"])

    def delete_meta(self, name: bytes) -> None:
        self._txn.delete(name, db=self._dbs["meta"])

    def partition_keys(self, part: int, limit: int) -> list[tuple[bytes, Record]]:
        """Up to `limit` records of one partition, in key order (for dropping it)."""
        prefix = _PART.pack(part)
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
        with self._txn.cursor(db=self._dbs[index]) as cur:
            for ikey in cur.iternext(keys=True, values=False):
                stamp = _U64.unpack_from(ikey)[0]
                if stamp > upto or len(out) >= limit:
                    break
                out.append((stamp, bytes(ikey[8:])))
        return out

    def drop_index(self, index: str, stamp: int, key: bytes) -> None:
        self._txn.delete(_U64.pack(stamp) + key, db=self._dbs[index])


WriteOp = Callable[[WriteTxn], Any]


class Storage:
    """An LMDB environment with group-committed writes and direct reads."""

    def __init__(
        self,
        path: str,
        *,
        map_size: int,
        fsync: bool = True,
        partitions: int = 256,
        max_readers: int = 1024,
        max_batch: int = 1024,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.partitions = partitions
        self._partition_of = partitioner(partitions)
        self._shift = 64 - (partitions.bit_length() - 1)
        self._env = lmdb.open(
            path,
            map_size=map_size,
            max_dbs=16,
            max_readers=max_readers,
            sync=fsync,
            # LMDB syncs the data pages in the commit (py-lmdb 3 lets go of the
            # GIL for it); the meta page is made durable by our own fdatasync
            # just after, which lets the event loop run meanwhile too.
            # Same order, same durability as metasync=True: nothing is
            # acknowledged before both are on disk.
            metasync=False,
            readahead=False,
            meminit=False,
        )
        self._sync_fd = os.open(os.path.join(path, "data.mdb"), os.O_RDONLY) if fsync else None
        self._dbs = {name: self._env.open_db(name.encode()) for name in _DBS}
        self._data = self._dbs["data"]
        self._digests = self._rebuild_digests()
        self._committer: GroupCommitter[WriteOp] = GroupCommitter(
            self._run_batch, max_batch=max_batch, on_batch=on_batch
        )
        self.closed = False

    # -- writes ---------------------------------------------------------------

    async def write(self, op: WriteOp) -> Any:
        """Apply `op` in the next group-committed transaction; durable on return."""
        return await self._committer.enqueue(op)

    def enqueue(self, op: WriteOp) -> asyncio.Future[Any]:
        """Like `write`, as a future (no coroutine per write on hot paths)."""
        return self._committer.enqueue(op)

    def backlog(self) -> int:
        """Writes queued for the writer thread and not yet in a transaction."""
        return self._committer.backlog()

    def commit_running_s(self) -> float:
        """Seconds the writer thread has spent on its current transaction (0: idle)."""
        return self._committer.busy_for()

    def backlogged(self) -> bool:
        """The writer thread is behind (`BACKLOG_LIMIT`): coordinated writes wait
        for their local copy too, and anti-entropy waits for a quieter moment."""
        return self.backlog() >= BACKLOG_LIMIT

    def _run_batch(self, ops: list[WriteOp]) -> list[Outcome]:
        try:
            return self._apply(ops)
        except (lmdb.MapFullError, _OpCrashedError):
            pass
        except lmdb.Error as exc:
            return [Outcome(error=StorageError(f"storage error: {exc}"))] * len(ops)
        # A batch failed as a whole: apply each operation alone so that only
        # the ones that cannot succeed fail.
        return [self._run_alone(op) for op in ops]

    def _run_alone(self, op: WriteOp) -> Outcome:
        try:
            return self._apply([op])[0]
        except lmdb.MapFullError:
            return Outcome(error=StorageFullError(_full_message(self._env)))
        except _OpCrashedError as exc:
            return Outcome(error=exc.__cause__ or exc)
        except lmdb.Error as exc:
            return Outcome(error=StorageError(f"storage error: {exc}"))

    def _apply(self, ops: list[WriteOp]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        with self._env.begin(write=True) as txn:
            wt = WriteTxn(txn, self._dbs, self._partition_of, self._shift)
            for op in ops:
                try:
                    outcomes.append(Outcome(value=op(wt)))
                except OpRefusedError as exc:
                    outcomes.append(Outcome(error=exc))
                except lmdb.Error:
                    raise
                except Exception as exc:  # a bug in one op must not commit half of it
                    raise _OpCrashedError() from exc
            if wt.max_ts:
                old = txn.get(_HLC_KEY, db=self._dbs["meta"])
                if old is None or _U64.unpack(old)[0] < wt.max_ts:
                    txn.put(_HLC_KEY, _U64.pack(wt.max_ts), db=self._dbs["meta"])
        # committed (readers see it): now the digests may say so
        digests = self._digests
        for (part, bucket), delta in wt.digest_delta.items():
            row = digests.get(part)
            if row is None:
                row = digests[part] = [0] * BUCKETS
            row[bucket] ^= delta
        if self._sync_fd is not None:
            try:
                os.fdatasync(self._sync_fd)  # the meta page: the commit is durable now
            except OSError as exc:
                raise StorageError(f"fsync failed; recent writes may be lost: {exc}") from exc
        return outcomes

    # -- reads (caller's thread; transactions closed before returning) -------

    def get(self, key: bytes) -> Record | None:
        pkey = _PART.pack(self._partition_of(key)) + key
        with self._env.begin(db=self._data) as txn:
            raw = txn.get(pkey)
        return None if raw is None else records.decode(raw)

    def get_raw_many(self, keys: list[bytes]) -> list[bytes | None]:
        """Packed records (or None) for `keys`, in one short read transaction."""
        part_of = self._partition_of
        pack = _PART.pack
        with self._env.begin(db=self._data) as txn:
            get = txn.get
            return [get(pack(part_of(key)) + key) for key in keys]

    def scan(self, start: bytes, *, inclusive: bool, limit: int) -> list[tuple[bytes, Record]]:
        """Up to `limit` records in key order from `start`, across all partitions.

        Each partition is a sorted range; their heads are merged (one cursor
        per partition, all in one short read transaction).
        """
        out: list[tuple[bytes, Record]] = []
        with self._env.begin(db=self._data) as txn:
            heads = [
                _partition_iter(txn, _PART.pack(p), start, inclusive)
                for p in range(self.partitions)
            ]
            for key, raw in heapq.merge(*heads):
                out.append((key, records.decode(raw)))
                if len(out) >= limit:
                    break
        return out

    # -- anti-entropy and streaming -------------------------------------------

    def bucket_digests(self) -> dict[int, list[int]]:
        """Every partition's bucket digests (partitions never written are absent)."""
        return {part: list(row) for part, row in self._digests.items()}

    def _rebuild_digests(self) -> dict[int, list[int]]:
        """Compute the digest table from the data (at open: it lives in memory)."""
        table: dict[int, list[int]] = {}
        with self._env.begin(db=self._data) as txn, txn.cursor() as cur:
            for pkey, raw in cur.iternext():
                part = _PART.unpack_from(pkey)[0]
                key = bytes(pkey[2:])
                row = table.get(part)
                if row is None:
                    row = table[part] = [0] * BUCKETS
                row[bucket_of(key)] ^= record_digest(key, records.decode(raw).version)
        return table

    def partition_records(
        self, part: int, *, after: bytes = b"", limit: int = 1000, bucket: int | None = None
    ) -> list[tuple[bytes, Record]]:
        """Records of one partition in key order after `after` (optionally one bucket)."""
        out: list[tuple[bytes, Record]] = []
        with self._env.begin(db=self._data) as txn:
            for key, raw in _partition_iter(txn, _PART.pack(part), after, not after):
                if bucket is not None and bucket_of(key) != bucket:
                    continue
                out.append((key, records.decode(raw)))
                if len(out) >= limit:
                    break
        return out

    # -- hints ------------------------------------------------------------------

    def hints_for(self, target: str, limit: int) -> list[tuple[bytes, bytes, Record]]:
        """Up to `limit` hints for `target`: (hint key, key, record)."""
        prefix = target.encode() + b"\x00"
        out: list[tuple[bytes, bytes, Record]] = []
        with self._env.begin(db=self._dbs["hints"]) as txn, txn.cursor() as cur:
            if not cur.set_range(prefix):
                return out
            for hkey, raw in cur.iternext():
                if not hkey.startswith(prefix) or len(out) >= limit:
                    break
                out.append((bytes(hkey), bytes(hkey[len(prefix) + 8 :]), records.decode(raw)))
        return out

    def hint_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._env.begin(db=self._dbs["hints"]) as txn, txn.cursor() as cur:
            for hkey in cur.iternext(keys=True, values=False):
                target = bytes(hkey).split(b"\x00", 1)[0].decode()
                counts[target] = counts.get(target, 0) + 1
        return counts

    def hlc_floor(self) -> int:
        with self._env.begin(db=self._dbs["meta"]) as txn:
            raw = txn.get(_HLC_KEY)
        return 0 if raw is None else int(_U64.unpack(raw)[0])

    def get_meta(self, name: bytes) -> bytes | None:
        with self._env.begin(db=self._dbs["meta"]) as txn:
            return txn.get(name)

    def stats(self) -> StorageStats:
        info = self._env.info()
        stat = self._env.stat()
        with self._env.begin(db=self._data) as txn:
            entries = txn.stat(self._data)["entries"]
        return StorageStats(
            entries=entries,
            map_size=info["map_size"],
            used_bytes=(info["last_pgno"] + 1) * stat["psize"],
            readers_used=info["num_readers"],
            max_readers=info["max_readers"],
        )

    def sync(self) -> None:
        self._env.sync(True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._committer.close()
        self._env.sync(True)
        self._env.close()
        if self._sync_fd is not None:
            os.close(self._sync_fd)


def _partition_iter(
    txn: lmdb.Transaction, prefix: bytes, start: bytes, inclusive: bool
) -> Iterator[tuple[bytes, bytes]]:
    """(key, raw record) of one partition from `start`, in key order."""
    cur = txn.cursor()
    try:
        if not cur.set_range(prefix + start):
            return
        for item in cur.iternext():
            pkey, raw = cast("tuple[bytes, bytes]", item)
            if not pkey.startswith(prefix):
                return
            key = pkey[2:]
            if not inclusive and key == start:
                continue
            yield key, raw
    finally:
        cur.close()


class _OpCrashedError(Exception):
    """An operation raised something unexpected; its batch is retried op by op."""


def _full_message(env: lmdb.Environment) -> str:
    return (
        f"storage is full: the LMDB map size is {env.info()['map_size']} bytes; "
        "raise --map-size (RINGKV_MAP_SIZE) and restart the node"
    )
