"""LMDB storage: the one module that imports `lmdb`.

Rules kept here (py-lmdb docs on threads and transactions):
- writes are applied on the event loop, every write of a loop turn in one
  transaction, and a syncer thread makes them durable (`GroupCommitter`), so
  concurrent writes share one transaction and one fsync;
- reads run on the caller's thread in short transactions that are always
  closed by a `with` block before anything else happens (a transaction left
  referenced by an exception keeps an LMDB reader slot; under load that ends
  in MDB_READERS_FULL);
- the map size is a setting, and a full map is a `StorageFullError` for the
  writes of that batch (HTTP 507), never a crash;
- LMDB commits unsynced; a batch is durable once its record in the
  write-ahead log (`wal`) is, and checkpoints (`checkpoint`) sync LMDB and
  pin the snapshot a crash rolls back to before the log is replayed.

Sub-databases: `data` (partition:u16 + key -> packed Record: a partition is
one range), `meta` (HLC high-water mark, ring), `expiry` (expires_ms:u64 +
key, TTL index), `tombs` (ts:u64 + key, tombstone index) so purges never scan
the data, and `hints`. Anti-entropy digests are kept in memory, updated after
each commit, and rebuilt from the data when the storage opens.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import lmdb
import xxhash

from ringkv.ring import hash_tag, partitioner
from ringkv_node import checkpoint, records, wal
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
_DBS = ("data", "meta", "expiry", "tombs", "hints")  # a log record names them by index
_DATA, _META, _EXPIRY, _TOMBS, _HINTS = range(len(_DBS))

log = logging.getLogger("ringkv.storage")

# A checkpoint (LMDB synced, older log segments deleted) at most this often
# while writes come in, and sooner when the log has grown by this much. The
# interval bounds the replay after a crash and the pages a checkpoint keeps
# from reuse (about a second of writes).
CHECKPOINT_INTERVAL_S = 1.0
CHECKPOINT_LOG_BYTES = 64 << 20
# ... and when the file has grown by this share of the map since the last one
# began: pages a checkpoint keeps from reuse make the file grow, and this
# bounds how much of the map they can take under a heavy write load.
CHECKPOINT_GROWTH_SHARE = 1 / 32
_REPLAY_TXN_RECORDS = 512  # log records replayed per LMDB transaction at open

# Writes waiting to be made durable beyond which the node counts as behind.
# Each fsync takes everything waiting, and a node's clients and peers keep a
# few dozen writes in flight, so a queue this deep is the disk losing
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
    entries: int  # records: live keys and tombstones
    tombstones: int
    map_size: int
    used_bytes: int
    readers_used: int
    max_readers: int
    log_bytes: int  # write-ahead log appended since the last checkpoint began
    checkpoint_age_s: float  # since the last checkpoint completed


class WriteTxn:
    """What a write operation may do inside the shared transaction.

    Data keys are stored as `partition:u16 + key`, so one partition is one
    range (anti-entropy buckets, rebalance streaming). Digest changes are
    collected here and folded into the in-memory table only after commit.
    """

    __slots__ = (
        "_data",
        "_handles",
        "_partition_of",
        "_shift",
        "_txn",
        "digest_delta",
        "max_ts",
        "redo",
    )

    def __init__(
        self,
        txn: lmdb.Transaction,
        handles: list[Any],
        partition_of: Callable[[bytes], int],
        shift: int,
    ) -> None:
        self._txn = txn
        self._handles = handles  # by index, as in _DBS
        self._data = handles[_DATA]
        self._partition_of = partition_of
        self._shift = shift
        self.max_ts = 0
        self.digest_delta: dict[tuple[int, int], int] = {}
        self.redo: list[wal.Mutation] = []  # every change made, for the log

    def _put(self, db: int, key: bytes, value: bytes) -> None:
        self._txn.put(key, value, db=self._handles[db])
        self.redo.append((db, key, value))

    def _delete(self, db: int, key: bytes) -> bool:
        deleted = bool(self._txn.delete(key, db=self._handles[db]))
        if deleted:
            self.redo.append((db, key, None))
        return deleted

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

    def apply_raw_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[bytes | None]:
        """`apply_raw` of every item (a bulk batch), in one loop: what `apply_raw`
        does per call, with the names looked up once. Records here were checked
        (`wire.packed_records`) or stamped by this node, so headers are read
        without checking them again. Sorted by stored key first: LMDB then
        walks its B-tree in order (a third less time for 1000 random keys).
        Returns the previous records in the order of `items`."""
        shift = self._shift
        pack_part = _PART.pack
        pkeys = []
        for key, _ in items:
            h = _xxh64(key)
            tag = hash_tag(key)
            pkeys.append(pack_part((h if tag is key else _xxh64(tag)) >> shift) + key)
        order = sorted(range(len(items)), key=pkeys.__getitem__)
        unpack = records.HEADER.unpack_from
        start = records.HEADER_SIZE
        txn_get, txn_put = self._txn.get, self._txn.put
        data = self._data
        redo = self.redo.append
        delta_of = self.digest_delta
        digest = record_digest_raw
        out: list[bytes | None] = [None] * len(items)
        max_ts = self.max_ts
        for i in order:
            key, raw = items[i]
            pkey = pkeys[i]
            ts, expires_ms, flags, node_len = unpack(raw)
            node = raw[start : start + node_len]
            prev = cast("bytes | None", txn_get(pkey, db=data))
            delta = 0
            if prev is not None:
                out[i] = prev
                p_ts, p_expires, p_flags, p_len = unpack(prev)
                p_node = prev[start : start + p_len]
                if ts < p_ts or (ts == p_ts and node <= p_node):
                    continue
                p_tomb = p_flags & records.TOMBSTONE
                if p_expires or p_tomb:
                    self._unindex(key, p_expires, p_ts if p_tomb else None)
                delta = digest(key, p_ts, p_node)
            txn_put(pkey, raw, db=data)
            redo((_DATA, pkey, raw))
            dkey = (pkey[0] << 8 | pkey[1], _xxh64(key) & _BUCKET_MASK)
            delta_of[dkey] = delta_of.get(dkey, 0) ^ delta ^ digest(key, ts, node)
            if expires_ms:
                self._put(_EXPIRY, _U64.pack(expires_ms) + key, b"")
            if flags & records.TOMBSTONE:
                self._put(_TOMBS, _U64.pack(ts) + key, b"")
            if ts > max_ts:
                max_ts = ts
        self.max_ts = max_ts
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
        self.redo.append((_DATA, pkey, raw))
        self._note_digest(part, h & _BUCKET_MASK, delta ^ record_digest_raw(key, ts, node))
        if expires_ms:
            self._put(_EXPIRY, _U64.pack(expires_ms) + key, b"")
        if tombstone:
            self._put(_TOMBS, _U64.pack(ts) + key, b"")
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
        self._delete(_DATA, _PART.pack(part) + key)
        self._note_digest(part, bucket_of(key), record_digest(key, prev.version))

    def _note_digest(self, part: int, bucket: int, delta: int) -> None:
        """Fold `delta` into a bucket's digest, for after the commit."""
        dkey = (part, bucket)
        self.digest_delta[dkey] = self.digest_delta.get(dkey, 0) ^ delta

    def add_hint(self, target: str, key: bytes, rec: Record) -> None:
        """Remember that `target` missed `rec` (hinted handoff)."""
        hkey = target.encode() + b"\x00" + _U64.pack(rec.version.ts) + key
        self._put(_HINTS, hkey, records.encode(rec))

    def drop_hint(self, hint_key: bytes) -> bool:
        return self._delete(_HINTS, hint_key)

    def _unindex(self, key: bytes, expires_ms: int, tombstone_ts: int | None) -> None:
        """Drop the purge-index entries of the record stored at `key` (its expiry,
        0 for none; its timestamp if it is a tombstone)."""
        if expires_ms:
            self._delete(_EXPIRY, _U64.pack(expires_ms) + key)
        if tombstone_ts is not None:
            self._delete(_TOMBS, _U64.pack(tombstone_ts) + key)

    def put_meta(self, name: bytes, value: bytes) -> None:
        self._put(_META, name, value)

    def delete_meta(self, name: bytes) -> None:
        self._delete(_META, name)

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
        with self._txn.cursor(db=self._handles[_DBS.index(index)]) as cur:
            for ikey in cur.iternext(keys=True, values=False):
                stamp = _U64.unpack_from(ikey)[0]
                if stamp > upto or len(out) >= limit:
                    break
                out.append((stamp, bytes(ikey[8:])))
        return out

    def drop_index(self, index: str, stamp: int, key: bytes) -> None:
        self._delete(_DBS.index(index), _U64.pack(stamp) + key)


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
        self._fsync = fsync
        data_file = os.path.join(path, "data.mdb")
        saved = checkpoint.load(path)
        if saved is not None:
            if not os.path.exists(data_file):
                raise StorageError(f"{data_file} is missing but {checkpoint.FILE} is there")
            checkpoint.restore(data_file, saved)
        # Unsynced commits: the log (`wal`) makes each batch durable, and
        # checkpoints sync LMDB itself (see `checkpoint`).
        self._env = lmdb.open(
            path,
            map_size=map_size,
            max_dbs=16,
            max_readers=max_readers,
            sync=False,
            metasync=False,
            readahead=False,
            meminit=False,
        )
        # The snapshot a crash rolls back to: held until the next checkpoint.
        self._pin: lmdb.Transaction | None = self._env.begin()
        if saved is not None and self._pin.id() != saved.txnid:
            raise StorageError(
                f"LMDB opened at transaction {self._pin.id()}, not at the "
                f"checkpoint's {saved.txnid}: refusing to replay the log over it"
            )
        self._page_size = int(self._env.stat()["psize"])
        self._meta_fd = os.open(data_file, os.O_RDONLY)
        self._dbs = {name: self._env.open_db(name.encode()) for name in _DBS}
        self._handles = [self._dbs[name] for name in _DBS]
        self._data = self._dbs["data"]
        self._wal = wal.Wal(os.path.join(path, "wal"))
        self.replayed = self._replay(0 if saved is None else saved.wal_seq)
        if self.replayed:
            log.info("replayed %d log records over the last checkpoint", self.replayed)
        self._checkpointer: threading.Thread | None = None
        self._checkpointing = False  # one is under way (started on the loop, ended by its thread)
        self._checkpoint_at = 0.0  # when the last one began
        self._checkpointed_at = 0.0  # when the last one completed
        self._pages_at_checkpoint = 0  # the file's size in pages when the last one began
        self._checkpoint_now()
        self._digests = self._rebuild_digests()
        self._records: list[bytes] = []  # log records of the batch being applied
        self._committer: GroupCommitter[WriteOp] = GroupCommitter(
            self._apply_batch,
            self._persist,
            max_batch=max_batch,
            on_batch=on_batch,
            after_apply=self._maybe_checkpoint,
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
        """Writes queued and not yet durable (with fsync) or applied (without)."""
        return self._committer.backlog()

    def commit_running_s(self) -> float:
        """Seconds the syncer has spent on its current log write and fsync (0: idle)."""
        return self._committer.busy_for()

    def backlogged(self) -> bool:
        """The disk is behind (`BACKLOG_LIMIT`): coordinated writes wait
        for their local copy too, and anti-entropy waits for a quieter moment."""
        return self.backlog() >= BACKLOG_LIMIT

    def _apply_batch(self, ops: list[WriteOp]) -> tuple[list[Outcome], list[bytes]]:
        """Event loop: apply `ops`; their outcomes and the log records to persist."""
        outcomes = self._run_ops(ops)
        records, self._records = self._records, []
        return outcomes, records

    def _persist(self, records: list[bytes]) -> None:
        """Syncer thread: append log records; with fsync, durable on return."""
        try:
            self._wal.append_many(records, sync=self._fsync)
        except OSError as exc:
            raise StorageError(f"{exc}; recent writes may be lost") from exc

    def _run_ops(self, ops: list[WriteOp]) -> list[Outcome]:
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
            wt = WriteTxn(txn, self._handles, self._partition_of, self._shift)
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
                    wt.put_meta(_HLC_KEY, _U64.pack(wt.max_ts))
        # committed (readers see it): now the digests may say so
        digests = self._digests
        for (part, bucket), delta in wt.digest_delta.items():
            row = digests.get(part)
            if row is None:
                row = digests[part] = [0] * BUCKETS
            row[bucket] ^= delta
        if wt.redo:
            self._records.append(wal.encode(wt.redo))
        return outcomes

    # -- checkpoints (see `checkpoint`) ---------------------------------------

    def _replay(self, first_segment: int) -> int:
        """Apply the log from `first_segment` on (over the restored snapshot)."""
        handles = self._handles
        count = 0
        records_ = self._wal.records(first_segment)
        while True:
            chunk = list(itertools.islice(records_, _REPLAY_TXN_RECORDS))
            if not chunk:
                return count
            try:
                with self._env.begin(write=True) as txn:
                    for payload in chunk:
                        for db, key, value in wal.decode(payload):
                            if value is None:
                                txn.delete(key, db=handles[db])
                            else:
                                txn.put(key, value, db=handles[db])
            except (wal.WalError, IndexError) as exc:
                raise StorageError(f"the write-ahead log does not replay: {exc}") from exc
            except lmdb.MapFullError as exc:
                raise StorageFullError(_full_message(self._env)) from exc
            count += len(chunk)

    def _pin_snapshot(self) -> tuple[lmdb.Transaction, bytes]:
        """Between two commits: pin the snapshot just committed (a read
        transaction) and copy the meta pages that describe it."""
        pin = self._env.begin()
        metas = os.pread(self._meta_fd, 2 * self._page_size, 0)
        if checkpoint.meta_txnid(metas, self._page_size) != pin.id():
            pin.abort()
            raise StorageError("LMDB's meta pages do not name the snapshot being checkpointed")
        self._checkpoint_at = time.monotonic()
        self._pages_at_checkpoint = self._env.info()["last_pgno"]
        return pin, metas

    def _checkpoint_now(self) -> None:
        """A whole checkpoint while nothing writes (at open and at close)."""
        pin, metas = self._pin_snapshot()
        try:
            seq = self._wal.rotate()
        except BaseException:
            pin.abort()
            raise
        self._finish_checkpoint(pin, checkpoint.Checkpoint(self._page_size, pin.id(), seq, metas))

    def _finish_checkpoint(self, pin: lmdb.Transaction, ckpt: checkpoint.Checkpoint) -> None:
        """Make the pinned snapshot durable and the one to roll back to."""
        try:
            checkpoint.write_back(self._meta_fd)
            self._env.sync(True)
            checkpoint.save(self.path, ckpt)
        except BaseException:
            pin.abort()  # the previous checkpoint (and its log) still stands
            raise
        old, self._pin = self._pin, pin
        if old is not None:
            old.abort()
        self._wal.drop_before(ckpt.wal_seq)
        self._checkpointed_at = time.monotonic()

    def _maybe_checkpoint(self) -> None:
        """Event loop, after batches are applied: start a checkpoint when one is due.

        The snapshot is pinned now, between commits; the syncer starts the new
        log segment once every record before the snapshot is written (and
        before any after it), then a thread of its own makes it durable."""
        if self._checkpointing:
            return
        if (
            time.monotonic() - self._checkpoint_at < CHECKPOINT_INTERVAL_S
            and self._wal.appended < CHECKPOINT_LOG_BYTES
            and not self._grown_since_checkpoint()
        ):
            return
        try:
            pin, metas = self._pin_snapshot()
        except (OSError, lmdb.Error, StorageError) as exc:
            log.error("checkpoint not started: %s", exc)
            return
        self._checkpointing = True
        self._committer.call_in_order(functools.partial(self._rotate_then_checkpoint, pin, metas))

    def _grown_since_checkpoint(self) -> bool:
        info = self._env.info()
        grown = (info["last_pgno"] - self._pages_at_checkpoint) * self._page_size
        return grown >= info["map_size"] * CHECKPOINT_GROWTH_SHARE

    def _rotate_then_checkpoint(self, pin: lmdb.Transaction, metas: bytes) -> None:
        """Syncer thread: later records go to a new segment; checkpoint in the background."""
        try:
            seq = self._wal.rotate()
        except OSError as exc:
            pin.abort()
            self._checkpointing = False
            log.error("checkpoint not started: %s", exc)
            return
        ckpt = checkpoint.Checkpoint(self._page_size, pin.id(), seq, metas)
        self._checkpointer = threading.Thread(
            target=self._background_checkpoint,
            args=(pin, ckpt),
            name="ringkv-checkpoint",
            daemon=True,
        )
        self._checkpointer.start()

    def _background_checkpoint(self, pin: lmdb.Transaction, ckpt: checkpoint.Checkpoint) -> None:
        try:
            self._finish_checkpoint(pin, ckpt)
        except (OSError, lmdb.Error) as exc:
            log.error(
                "checkpoint failed (the log is kept; next try in %ss): %s",
                CHECKPOINT_INTERVAL_S,
                exc,
            )
        finally:
            self._checkpointing = False

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

    def snapshot(self, part: int) -> Iterator[tuple[bytes, bytes]]:
        """Every record of one partition, packed, in key order, from one read
        transaction: a consistent snapshot of it (a backup's read).

        The one read that outlives a call: the transaction stays open while
        the generator runs, so create, run and close it on one thread, off
        the event loop (`snapshot` module). LMDB keeps the snapshot's pages
        from reuse meanwhile, as it does for a checkpoint's.
        """
        with self._env.begin(db=self._data) as txn:
            yield from _partition_iter(txn, _PART.pack(part), b"", True)

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
            tombstones = txn.stat(self._dbs["tombs"])["entries"]  # one index entry each
        return StorageStats(
            entries=entries,
            tombstones=tombstones,
            map_size=info["map_size"],
            used_bytes=(info["last_pgno"] + 1) * stat["psize"],
            readers_used=info["num_readers"],
            max_readers=info["max_readers"],
            log_bytes=self._wal.appended,
            checkpoint_age_s=time.monotonic() - self._checkpointed_at,
        )

    def failed(self) -> str | None:
        """Why writes are refused until a restart (the log could not be written)."""
        return self._wal.failed

    async def aclose(self) -> None:
        """`close` from the event loop: queued writes are applied here, the rest
        (waiting for them to persist, the last checkpoint) runs on a thread."""
        self._committer.shut()
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Finish queued writes, take a last checkpoint (the log is then empty), close.

        Call it on the event loop's thread, or once that loop writes no more
        (`aclose` from a coroutine)."""
        if self.closed:
            return
        self.closed = True
        self._committer.close()
        if self._checkpointer is not None:
            self._checkpointer.join()
        try:
            self._checkpoint_now()
        except (OSError, lmdb.Error, StorageError) as exc:
            log.error("last checkpoint failed; the next start replays the log: %s", exc)
        if self._pin is not None:
            self._pin.abort()
            self._pin = None
        self._wal.close()
        self._env.close()
        os.close(self._meta_fd)


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
