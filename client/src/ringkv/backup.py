"""Backup and restore of a whole cluster: the I/O shell around `ringkv.backupformat`.

    manifest = create(seeds, token, store, cluster="kv")
    verify(store, backup_id)
    summary = restore(store, backup_id, seeds, token)

**What a backup holds.** Every partition is read from a read quorum of its
owners (or all of them, `consistency="all"`), each replica's records of it
coming from one LMDB read transaction (`GET /admin/v1/snapshot/{p}`), and
the replicas' records are merged last-writer-wins. A write acknowledged
before the backup started is on a write quorum of its owners, and every read
quorum meets every write quorum, so it is in the backup, also when one
replica missed it (a W=2-of-N=3 write that one owner never got). Writes made
while the backup runs may or may not be in it. Every node is asked first,
once, for a fingerprint of each partition it owns (`GET /admin/v1/snapshot`:
their anti-entropy bucket digests, hashed; a `HEAD` of one snapshot gives
one, for a ring the backup meets later); when the read quorum's owners of a
partition give the same, they hold the same keys at the same versions, so
one of them is read alone (what it holds then holds every record the others
did, at that version or newer, since records only move forward) and the
nodes and this side do a third of the work of a merge. Requests to a node go
over a few kept-alive connections. The nodes stream their
partitions and hold one frame at a time; this side holds the partitions it
is merging (a few at once) and the part it is filling. When the two
replicas' streams are the same bytes (the usual case), frames go into the
part as they came, without being decoded. If the ring changes while the
backup runs, the nodes refuse the snapshots asked at the old epoch (409
`stale_epoch`, or `not_owner`): the partition is read again, whole, from a
read quorum of its owners in the newer ring, which the refusing node gives
(`ringkv._backupretry` decides; a few attempts, then the backup fails).
It does not begin while a ring change is half committed (some members at
the new ring, some at the old), waiting for every member to be at one epoch
(`ringkv._backupretry.start_step`): an acknowledged write could then be on
the new ring's owners only.

**Restore** checks the manifest and the size and SHA-256 of every part before
it writes anything, then reads the parts in order (checking every record's
order and partition, and every count, as it goes) and writes their records
in bulk through the new cluster's ring (`POST /admin/v1/apply` on an owner
of each record's partition: one call per batch, one replica call per peer),
keeping each record's version and expiry, last-writer-wins, so a restore
into a cluster of any size, Q or N gives the same keys at the same versions;
re-running one is harmless. Records already expired are skipped; tombstones
are written, so deleted keys stay deleted.
"""

from __future__ import annotations

import concurrent.futures as cf
import http.client
import json
import secrets
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlsplit

import msgpack

from ringkv import __version__
from ringkv._backupretry import Refusal, RingRetry, refusal_of, start_step
from ringkv._core import Request, decode
from ringkv._syncpool import Pool
from ringkv.backupformat import (
    DEFAULT_PART_SIZE,
    MANIFEST,
    ZSTD_LEVEL,
    Manifest,
    PartInfo,
    PartReader,
    PartWriter,
    blocks,
    check_backup_id,
    check_counts,
    check_stored,
    check_text,
    merge_newest,
)
from ringkv.client import Client
from ringkv.dumpfile import DumpRecord
from ringkv.errors import (
    BackupFailedError,
    BackupNotFoundError,
    InvalidBackupError,
    NoRingError,
    NotEnoughReplicasError,
    ResponseError,
    TransportError,
    UnavailableError,
    error_for,
)
from ringkv.packed import HEADER, TOMBSTONE, fields, is_live
from ringkv.rebalance import NodeView
from ringkv.retention import Backup, Decision, Retention, select
from ringkv.ring import Ring
from ringkv.stores import Store

__all__ = [
    "BackupFailedError",
    "RestoreSummary",
    "VerifySummary",
    "create",
    "delete",
    "find",
    "new_backup_id",
    "prune",
    "restore",
    "verify",
]

Progress = Callable[[int, int], None]  # records, bytes (increments)


# A restore keeps the parts it checked in memory, up to this many bytes, so
# as not to read (from S3: download) them twice.
KEEP_BYTES = 256 << 20

# How long a read of the cluster (a backup, a dump) waits at most for a ring
# change that is committing before it begins (`ringkv backup create --ring-wait`).
RING_WAIT_S = 600.0

# Records a restore sends in one apply call, by default and at most (the
# node's `MAX_APPLY_RECORDS`): 5,000 restored 1M records 10-13 % faster than
# 2,000 did, and 10,000 no faster (design §7.13).
RESTORE_BATCH = 5000
MAX_RESTORE_BATCH = 10_000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_backup_id(now_ms: int, rand: str | None = None) -> str:
    """`20261203T101500Z-7f3a`: sorts by time, unique enough for one destination."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_ms / 1000))
    return f"{stamp}-{rand or secrets.token_hex(2)}"


RING_RETRY = RingRetry()  # how a partition is read again when the ring moved under it


def _needed(consistency: str, n: int) -> int:
    if consistency == "all":
        return n
    if consistency == "quorum":
        return n // 2 + 1
    raise ValueError(f"backup reads need quorum or all, not {consistency!r}")


# -- reading one replica's snapshot ------------------------------------------------


def _connection(url: str, timeout: float) -> http.client.HTTPConnection:
    """A connection to a node's URL (http or https), not yet opened."""
    split = urlsplit(url)
    conn_class = (
        http.client.HTTPSConnection if split.scheme == "https" else http.client.HTTPConnection
    )
    return conn_class(split.hostname or "127.0.0.1", split.port, timeout=timeout)


class _Connections:
    """Keep-alive connections to the nodes, shared by a backup's reader threads.

    A snapshot read to its end frame, a `HEAD` or the fingerprints' `GET`
    gives its connection back for the next request to that node (a new
    connection per request cost the nodes and this side more CPU than
    reading a tenth of the records did)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._idle: dict[str, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def open(
        self, url: str, method: str, path: str, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """`method path` on a connection to `url` and its answer's head; a kept
        connection the node has closed meanwhile is replaced by a new one."""
        while True:
            with self._lock:
                idle = self._idle.get(url)
                conn = idle.pop() if idle else None
            kept = conn is not None
            if conn is None:
                conn = _connection(url, self.timeout)
            try:
                conn.request(method, path, headers=headers)
                return conn, conn.getresponse()
            except TimeoutError:
                conn.close()
                raise
            except (OSError, http.client.HTTPException):
                conn.close()
                if not kept:
                    raise

    def give(
        self, url: str, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse
    ) -> None:
        """Keep `conn` for the next request to `url` when `resp` was read to its
        end and the node keeps the connection open; close it otherwise."""
        if resp.isclosed() and not resp.will_close:
            with self._lock:
                self._idle.setdefault(url, []).append(conn)
        else:
            conn.close()

    def __enter__(self) -> _Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class _Snapshot:
    """One replica's `GET /admin/v1/snapshot/{p}`, read frame by frame."""

    def __init__(self, conns: _Connections, url: str, part: int, epoch: int, token: str) -> None:
        self.where = f"{url} partition {part}"
        self._conns = conns
        self._url = url
        self._ended = False
        try:
            self._conn, self._resp = conns.open(
                url, "GET", f"/admin/v1/snapshot/{part}?epoch={epoch}", _auth(token)
            )
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"snapshot of {self.where}: {exc!r}") from None
        if self._resp.status != 200:
            body = self._resp.read()
            self.close()
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {"error": "http_error", "message": body[:200].decode(errors="replace")}
            raise error_for(self._resp.status, doc if isinstance(doc, dict) else {})
        self.rows_seen = 0

    def _read(self, n: int) -> bytes:
        try:
            data = self._resp.read(n)
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"snapshot of {self.where} cut short: {exc!r}") from None
        if len(data) != n:
            raise TransportError(f"snapshot of {self.where} cut short")
        return data

    def frames(self) -> Iterator[bytes]:
        """Each frame's msgpack payload (a list of [key, record]); after the
        last, checks the end frame's count against `rows_seen` (kept by the caller)."""
        while True:
            (length,) = struct.unpack(">I", self._read(4))
            payload = self._read(length)
            if payload[:1] and payload[0] & 0xF0 == 0x80:  # a map: the end frame
                end = msgpack.unpackb(payload, raw=False)
                self.end_records = int(end.get("records", -1))
                self._ended = True
                return
            yield payload

    def close(self) -> None:
        """Give the connection back when the stream was read to its end (what
        is left is the chunked body's last, empty chunk), else close it."""
        if self._ended:
            try:
                self._resp.read()
            except (OSError, http.client.HTTPException):
                self._conn.close()
                return
            self._conns.give(self._url, self._conn, self._resp)
        else:
            self._conn.close()


def _array_len(payload: bytes) -> int:
    """The length of the msgpack array `payload` starts with (a frame's records)."""
    first = payload[0]
    if first & 0xF0 == 0x90:
        return first & 0x0F
    if first == 0xDC:
        return int(struct.unpack_from(">H", payload, 1)[0])
    if first == 0xDD:
        return int(struct.unpack_from(">I", payload, 1)[0])
    raise ValueError("a snapshot frame is not a list")


def _rows(
    first: bytes | None, rest: Iterator[bytes], snap: _Snapshot
) -> Iterator[tuple[bytes, bytes]]:
    for payload in [first] if first is not None else []:
        for key, rec in msgpack.unpackb(payload, raw=True):
            snap.rows_seen += 1
            yield key, rec
    for payload in rest:
        for key, rec in msgpack.unpackb(payload, raw=True):
            snap.rows_seen += 1
            yield key, rec


def _merged(snaps: list[_Snapshot]) -> Iterator[tuple[bytes, int]]:
    """The partition's records from every snapshot, newest of each key, as
    (block, count): frames passed through while every replica sent the same
    bytes, merged record by record from the first difference on."""
    streams = [s.frames() for s in snaps]
    while True:
        heads = [next(st, None) for st in streams]
        if all(h is None for h in heads):
            return
        if all(h == heads[0] for h in heads):
            assert heads[0] is not None
            count = _array_len(heads[0])
            for s in snaps:
                s.rows_seen += count
            yield heads[0], count
            continue
        merged: Iterator[tuple[bytes, bytes]] = _rows(heads[0], streams[0], snaps[0])
        for head, st, snap in zip(heads[1:], streams[1:], snaps[1:], strict=True):
            merged = merge_newest(merged, _rows(head, st, snap))
        yield from blocks(merged)
        return


# -- create ----------------------------------------------------------------------


# A partition read ahead of its turn is held in memory up to this many bytes
# of blocks, the rest in a temporary file: a backup reads `workers * 2`
# partitions ahead, and a big cluster's partitions are hundreds of MB each.
SPOOL_BYTES = 16 << 20
_SPOOLED = struct.Struct(">II")  # a spooled block's length and record count


class _Partition:
    """One partition's blocks as read, in order, until the backup writes them:
    the first `spool_bytes` of them in memory, the rest in a temporary file
    (`TMPDIR`). `close` lets them go."""

    def __init__(self, part: int, spool_bytes: int) -> None:
        self.part = part
        self.records = 0
        self.raw = 0
        self._memory: list[tuple[bytes, int]] = []
        self._file: IO[bytes] | None = None
        self._spool_bytes = spool_bytes

    def add(self, block: bytes, count: int) -> None:
        self.records += count
        self.raw += len(block)
        if self._file is None and self.raw <= self._spool_bytes:
            self._memory.append((block, count))
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="ringkv-backup-")  # noqa: SIM115 (closed by close)
        self._file.write(_SPOOLED.pack(len(block), count))
        self._file.write(block)

    def blocks(self) -> Iterator[tuple[bytes, int]]:
        """Every (block, record count), in the order they were added."""
        yield from self._memory
        if self._file is not None:
            self._file.flush()
            self._file.seek(0)
            while head := self._file.read(_SPOOLED.size):
                length, count = _SPOOLED.unpack(head)
                yield self._file.read(length), count

    def close(self) -> None:
        self._memory = []
        if self._file is not None:
            self._file.close()
            self._file = None


def _fingerprint(conns: _Connections, url: str, part: int, epoch: int, token: str) -> str | None:
    """A replica's `X-Ringkv-Digest` of one partition (HEAD of its snapshot), or
    None when it does not answer with one (the full read then says why)."""
    try:
        conn, resp = conns.open(
            url, "HEAD", f"/admin/v1/snapshot/{part}?epoch={epoch}", _auth(token)
        )
        resp.read()
    except (OSError, http.client.HTTPException):
        return None
    conns.give(url, conn, resp)
    return resp.getheader("X-Ringkv-Digest") if resp.status == 200 else None


def _digests(conns: _Connections, url: str, epoch: int, token: str) -> dict[int, str]:
    """Every `X-Ringkv-Digest` a node gives at once (`GET /admin/v1/snapshot`:
    the partitions it owns at `epoch`), or none when it does not answer so."""
    try:
        conn, resp = conns.open(url, "GET", f"/admin/v1/snapshot?epoch={epoch}", _auth(token))
        body = resp.read()
    except (OSError, http.client.HTTPException):
        return {}
    conns.give(url, conn, resp)
    try:
        doc = json.loads(body) if resp.status == 200 else {}
        if not isinstance(doc, dict) or doc.get("epoch") != epoch:
            return {}
        return {int(p): str(d) for p, d in doc["digests"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


@dataclass
class _Reads:
    """What a backup's reader threads share: how to reach and read the nodes,
    and the fingerprints the owners gave when the backup began, by (epoch,
    node URL, partition). Any fingerprint taken after the start proves what
    a `HEAD` just before the read would (records only move forward), so the
    start's stand in for a `HEAD` per owner and partition."""

    token: str
    consistency: str
    conns: _Connections
    known: dict[tuple[int, str, int], str] = field(default_factory=dict)
    spool_bytes: int = SPOOL_BYTES  # `_Partition`

    def learn(self, ring: Ring, workers: int) -> None:
        """Ask every member of `ring` for its fingerprints (in `workers` threads)."""
        urls = [m.url for m in ring.members]
        with cf.ThreadPoolExecutor(max(1, min(workers, len(urls)))) as pool:
            answers = pool.map(lambda url: _digests(self.conns, url, ring.epoch, self.token), urls)
            for url, digests in zip(urls, answers, strict=True):
                for part, digest in digests.items():
                    self.known[(ring.epoch, url, part)] = digest

    def fingerprint(self, url: str, part: int, epoch: int) -> str | None:
        known = self.known.get((epoch, url, part))
        if known is not None:
            return known
        return _fingerprint(self.conns, url, part, epoch, self.token)


def _member_ring(conns: _Connections, url: str, token: str) -> tuple[NodeView, list[str]]:
    """What one member says (`GET /admin/v1/rebalance`: its epoch, its joining
    ring's), by its URL, and the URLs of its joining ring's members."""
    silent: tuple[NodeView, list[str]] = (NodeView(url, False), [])
    try:
        conn, resp = conns.open(url, "GET", "/admin/v1/rebalance", _auth(token))
        body = resp.read()
    except (OSError, http.client.HTTPException):
        return silent
    conns.give(url, conn, resp)
    if resp.status != 200:
        return silent
    try:
        doc = json.loads(body)
        epoch, pending = doc["epoch"], doc.get("pending_epoch")
        if type(epoch) is not int or not (pending is None or type(pending) is int):
            return silent
        said = NodeView.from_progress(url, doc)
        joining = doc.get("pending_ring")
        urls = [m.url for m in Ring.from_dict(joining).members] if joining else []
    except (ValueError, KeyError, TypeError, AttributeError):
        return silent
    return said, urls


def _member_rings(
    conns: _Connections, ring: Ring, token: str, pool: cf.ThreadPoolExecutor
) -> list[NodeView]:
    """What every member of `ring`, and of any joining ring they hold, says of its ring."""
    asked: dict[str, NodeView] = {}
    todo = [m.url for m in ring.members]
    while todo:
        more: list[str] = []
        for said, urls in pool.map(lambda url: _member_ring(conns, url, token), todo):
            asked[said.id] = said
            more += urls
        todo = [u for u in dict.fromkeys(more) if u not in asked]
    return list(asked.values())


def _settled(
    rings: _RingView, conns: _Connections, token: str, wait_s: float, pool: cf.ThreadPoolExecutor
) -> Ring:
    """The ring to begin reading at, once no ring change is committing
    (`ringkv._backupretry.start_step`), waiting at most `wait_s` for it."""
    deadline = time.monotonic() + wait_s
    ring = rings.ring
    while True:
        step = start_step(ring.epoch, _member_rings(conns, ring, token, pool))
        if step.action == "go":
            return ring
        if step.action == "refresh":
            newer = rings.refresh(ring, step.url)
            if newer.epoch > ring.epoch:
                ring = newer
                continue
        if time.monotonic() >= deadline:
            raise BackupFailedError(
                f"the backup cannot begin while {step.reason}; it waited {wait_s:g} s "
                "for the change to settle: run it again once the change is done"
            )
        time.sleep(0.5)


def _agreeing(reads: _Reads, ring: Ring, order: list[str], needed: int, part: int) -> bool:
    """True when the first `needed` owners in `order` hold the same records of
    the partition (equal fingerprints): reading the first alone then reads
    them all, since what either holds the other does, at that version or a
    newer one (records only move forward), and merging would change nothing."""
    if needed < 2:
        return False
    prints = {reads.fingerprint(ring.member(o).url, part, ring.epoch) for o in order[:needed]}
    return len(prints) == 1 and None not in prints


class _RingMovedError(Exception):
    """An owner refused a snapshot because of the ring (`ringkv._backupretry`)."""

    def __init__(self, url: str, refusal: Refusal, error: ResponseError) -> None:
        super().__init__(f"{url}: {error}")
        self.url = url
        self.refusal = refusal


class _RingView:
    """The ring the backup reads by, shared by its reader threads. It only moves
    forward: to a newer ring that a node refusing a snapshot, or else a member
    or a seed, answers with; one of another Q or N fails the backup."""

    def __init__(self, ring: Ring, seeds: list[str], token: str, timeout: float) -> None:
        self.ring = ring
        self._seeds = seeds
        self._token = token
        self._timeout = timeout
        self._lock = threading.Lock()

    def refresh(self, seen: Ring, first: str) -> Ring:
        """A ring newer than `seen` when the cluster has one (asking `first` first),
        else the newest known; a reader that comes second takes the first's."""
        with self._lock:
            if self.ring.epoch > seen.epoch:
                return self.ring
            urls = list(dict.fromkeys([first, *(m.url for m in self.ring.members), *self._seeds]))
            try:
                with Client(urls, token=self._token, timeout=self._timeout) as kv:
                    ring = kv.ring()
            except (NoRingError, TransportError):
                return self.ring  # none answered now: the next attempt asks again
            if (ring.partitions, ring.replication_factor) != (
                self.ring.partitions,
                self.ring.replication_factor,
            ):
                raise BackupFailedError(
                    f"the ring changed to {ring.partitions} partitions and N="
                    f"{ring.replication_factor} during the backup (from "
                    f"{self.ring.partitions}, N={self.ring.replication_factor})"
                )
            if ring.epoch > self.ring.epoch:
                self.ring = ring
            return self.ring


def _read_partition(rings: _RingView, part: int, reads: _Reads, retry: RingRetry) -> _Partition:
    """Partition `part` from a read quorum of its owners in one ring, read again
    at a newer ring each time an owner refuses because the ring moved."""
    ring = rings.ring
    refused = 0
    while True:
        try:
            return _read_at(ring, part, reads)
        except _RingMovedError as exc:
            refused += 1
            step = retry.after_refusal(exc.refusal, ring.epoch, refused)
            if step is None:
                raise BackupFailedError(
                    f"partition {part}: its owners refused it {refused} times as the ring "
                    f"kept moving (last at epoch {ring.epoch}: {exc}); run the backup again "
                    "once the ring has settled"
                ) from None
            ring = rings.refresh(ring, exc.url) if step.refresh else rings.ring
            time.sleep(step.delay_s)


def _read_at(ring: Ring, part: int, reads: _Reads) -> _Partition:
    """Partition `part` from a read quorum of its owners in `ring`, every snapshot
    at its epoch; `_RingMovedError` when an owner refuses because of the ring."""
    owners = list(ring.owners(part))
    needed = _needed(reads.consistency, len(owners))
    errors: list[str] = []
    for attempt in range(3):
        # spread the reads: start from a different owner for each partition and try
        start = (part + attempt) % len(owners)
        order = owners[start:] + owners[:start]
        snaps: list[_Snapshot] = []
        try:
            wanted = needed
            if _agreeing(reads, ring, order, needed, part):
                wanted, order = 1, order[:1]  # the others hold exactly what it holds
            for owner in order:
                if len(snaps) == wanted:
                    break
                url = ring.member(owner).url
                try:
                    snaps.append(_Snapshot(reads.conns, url, part, ring.epoch, reads.token))
                except TransportError as exc:
                    errors.append(str(exc))
                except ResponseError as exc:
                    refusal = refusal_of(exc)
                    if refusal is None:
                        raise
                    raise _RingMovedError(url, refusal, exc) from None
            if len(snaps) < wanted:
                continue
            out = _Partition(part, reads.spool_bytes)
            try:
                for block, count in _merged(snaps):
                    out.add(block, count)
                for snap in snaps:
                    if snap.end_records != snap.rows_seen:
                        raise TransportError(
                            f"snapshot of {snap.where}: {snap.rows_seen} records, "
                            f"its end frame says {snap.end_records}"
                        )
            except BaseException:
                out.close()
                raise
            return out
        except TransportError as exc:
            errors.append(str(exc))
        finally:
            for snap in snaps:
                snap.close()
    raise BackupFailedError(
        f"partition {part}: fewer than {needed} of its owners {', '.join(owners)} "
        f"gave a whole snapshot ({'; '.join(errors[-3:])})"
    )


def _close_partition(fut: cf.Future[_Partition]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()


class _ClusterRead:
    """Every partition of a cluster, read as a backup reads it (each from a
    read quorum of its owners at one ring, merged newest-first, read again at
    a newer ring when the ring moves), in partition order.

    Entering it takes the cluster's ring, waits (at most `ring_wait_s`)
    until no ring change is committing, and notes `started`: every write
    acknowledged before then is in what `partitions()` gives. `workers`
    threads read up to twice as many partitions ahead; the caller closes each
    `_Partition` it is given. Leaving lets go of what was read ahead."""

    def __init__(
        self,
        seeds: list[str],
        token: str,
        *,
        consistency: str,
        timeout: float,
        workers: int,
        ring_wait_s: float,
        spool_bytes: int,
    ) -> None:
        self._seeds = seeds
        self._token = token
        self._consistency = consistency
        self._timeout = timeout
        self._workers = workers
        self._ring_wait_s = ring_wait_s
        self._spool_bytes = spool_bytes
        self._pending: deque[cf.Future[_Partition]] = deque()

    def __enter__(self) -> _ClusterRead:
        with Client(self._seeds, token=self._token, timeout=self._timeout) as kv:
            ring = kv.ring()  # the ring it starts with (a partition may be read at a newer one)
        _needed(self._consistency, ring.replication_factor)
        self._rings = _RingView(ring, self._seeds, self._token, self._timeout)
        self._reads = _Reads(
            self._token,
            self._consistency,
            _Connections(self._timeout),
            spool_bytes=self._spool_bytes,
        )
        self._readers = cf.ThreadPoolExecutor(
            self._workers, thread_name_prefix="ringkv-backup-read"
        )
        try:
            self.ring = _settled(
                self._rings, self._reads.conns, self._token, self._ring_wait_s, self._readers
            )
            self.started = _now_ms()  # what was acknowledged before now is in the read
            self._reads.learn(self.ring, self._workers)
        except BaseException:
            self.__exit__()
            raise
        return self

    def partitions(self) -> Iterator[_Partition]:
        """Each partition of `ring` (it has `ring.partitions`), in order."""
        next_part = 0
        parts = self.ring.partitions
        while next_part < parts or self._pending:
            while next_part < parts and len(self._pending) < self._workers * 2:
                self._pending.append(
                    self._readers.submit(
                        _read_partition, self._rings, next_part, self._reads, RING_RETRY
                    )
                )
                next_part += 1
            yield self._pending.popleft().result()

    def __exit__(self, *exc: object) -> None:
        for fut in self._pending:  # read ahead and not taken: let go of their spools
            fut.cancel()
            fut.add_done_callback(_close_partition)
        self._pending.clear()
        self._readers.shutdown(wait=True)
        self._reads.conns.close()


def create(
    seeds: list[str],
    token: str,
    store: Store,
    *,
    cluster: str = "ringkv",
    backup_id: str | None = None,
    part_size: int = DEFAULT_PART_SIZE,
    consistency: str = "quorum",
    timeout: float = 30.0,
    workers: int = 4,
    progress: Progress | None = None,
    zstd_level: int = ZSTD_LEVEL,
    ring_wait_s: float = RING_WAIT_S,
    spool_bytes: int = SPOOL_BYTES,
) -> Manifest:
    """Back the cluster up into `store`; return the manifest (written last).
    `zstd_level` trades the client's CPU for the parts' size (1, the default,
    is the fastest; a restore reads any). The backup begins once no ring
    change is committing, waiting at most `ring_wait_s` for that."""
    backup_id = check_backup_id(backup_id or new_backup_id(_now_ms()))
    check_text("the cluster name", cluster)  # a manifest that would not load
    _needed(consistency, 1)  # a level it knows, before anything is asked or written
    existing = store.names(backup_id)
    if f"{backup_id}/{MANIFEST}" in existing:
        raise ValueError(f"{store.location}/{backup_id} exists already: choose another id")
    writer = PartWriter(part_size, zstd_level)
    parts = []
    uploads: deque[cf.Future[None]] = deque()
    with (
        _ClusterRead(
            seeds,
            token,
            consistency=consistency,
            timeout=timeout,
            workers=workers,
            ring_wait_s=ring_wait_s,
            spool_bytes=spool_bytes,
        ) as read,
        cf.ThreadPoolExecutor(2, thread_name_prefix="ringkv-backup-write") as writers,
    ):
        if existing:  # parts of an attempt that never finished (no manifest): not a backup
            store.delete(list(existing))
        ring = read.ring
        counts = [0] * ring.partitions

        def upload(data: bytes, name: str) -> None:
            store.put(f"{backup_id}/{name}", data)

        def finished(done: tuple[bytes, Any] | None) -> None:
            if done is None:
                return
            data, info = done
            parts.append(info)
            uploads.append(writers.submit(upload, data, info.name))
            while len(uploads) > 2:  # at most a few parts in memory
                uploads.popleft().result()

        for result in read.partitions():
            counts[result.part] = result.records
            try:
                for block, count in result.blocks():
                    finished(writer.add(result.part, block, count))
            finally:
                result.close()
            if progress is not None:
                progress(result.records, result.raw)
        if not writer.empty or not parts:
            finished(writer.finish())
        while uploads:
            uploads.popleft().result()
    manifest = Manifest(
        cluster=cluster,
        backup_id=backup_id,
        created_ms=read.started,
        completed_ms=_now_ms(),
        ringkv_version=__version__,
        ring_epoch=ring.epoch,
        partitions=ring.partitions,
        replication_factor=ring.replication_factor,
        read_consistency=consistency,
        partition_records=counts,
        parts=parts,
    )
    store.put(f"{backup_id}/{MANIFEST}", manifest.to_json())
    return manifest


def dump_records(
    seeds: list[str],
    token: str,
    *,
    prefix: str = "",
    deleted: bool = False,
    timeout: float = 30.0,
    workers: int = 4,
    now_ms: Callable[[], int] = _now_ms,
    progress: Progress | None = None,
) -> Iterator[DumpRecord]:
    """Every live key of the cluster that starts with `prefix`, as `ringkv dump`
    writes it, read as a backup reads (`_ClusterRead`: each partition from a
    read quorum of its owners, partition by partition, in key order within
    one); with `deleted`, then the keys deleted or expired that the cluster
    still keeps, as deleted records. Every write acknowledged before it
    started is in it. Needs the cluster token (the snapshot route is admin)."""
    want = prefix.encode("utf-8")
    gone: list[DumpRecord] = []
    with _ClusterRead(
        seeds,
        token,
        consistency="quorum",
        timeout=timeout,
        workers=workers,
        ring_wait_s=RING_WAIT_S,
        spool_bytes=SPOOL_BYTES,
    ) as read:
        now = now_ms()
        for part in read.partitions():
            try:
                for block, _ in part.blocks():
                    for key, raw in msgpack.unpackb(block, raw=True):
                        if want and not key.startswith(want):
                            continue
                        rec = _dump_record(key, raw, now)
                        if not rec.deleted:
                            yield rec
                        elif deleted:
                            gone.append(rec)
            finally:
                part.close()
            if progress is not None:
                progress(part.records, part.raw)
    yield from gone


def _dump_record(key: bytes, raw: bytes, now_ms: int) -> DumpRecord:
    """A stored record as a dump line's record: deleted when it is a tombstone
    or has expired by `now_ms`."""
    ts, expires_ms, _, node = fields(raw)
    version = f"{ts}@{node.decode()}"
    text = key.decode("utf-8")
    if not is_live(raw, now_ms):
        return DumpRecord(text, version=version, deleted=True)
    value = raw[HEADER.size + len(node) :]
    return DumpRecord(text, value, version, expires_ms or None)


# -- finding, verifying, deleting ------------------------------------------------------


def load_manifest(store: Store, backup_id: str) -> Manifest:
    try:
        data = store.get(f"{backup_id}/{MANIFEST}")
    except BackupNotFoundError:
        raise BackupNotFoundError(f"no backup {backup_id} in {store.location}") from None
    try:
        manifest = Manifest.from_json(data)
    except InvalidBackupError as exc:  # which backup: a destination holds many
        raise InvalidBackupError(f"backup {backup_id}: {exc}") from None
    if manifest.backup_id != backup_id:
        raise InvalidBackupError(
            f"{store.location}/{backup_id}/{MANIFEST} names backup {manifest.backup_id}"
        )
    return manifest


def find(store: Store, backup_id: str | None) -> Manifest:
    """The backup `backup_id`, or the newest one when None or `latest`: the
    newest whose manifest loads (one that does not is no backup, as one
    without a manifest is not; `listing` shows it)."""
    if backup_id in (None, "latest"):
        found = listing(store)
        if not found:
            raise BackupNotFoundError(f"no backups in {store.location}")
        manifests = [m for m in found if isinstance(m, Manifest)]
        if not manifests:
            why = "; ".join(m[1] for m in found if not isinstance(m, Manifest))
            raise InvalidBackupError(f"no backup in {store.location} loads: {why}")
        return max(manifests, key=lambda m: (m.created_ms, m.backup_id))
    return load_manifest(store, check_backup_id(backup_id))


def listing(store: Store) -> list[Manifest | tuple[str, str]]:
    """Every complete backup's manifest, oldest first; (id, error) for one that
    does not load."""
    out: list[Manifest | tuple[str, str]] = []
    for backup_id in store.backup_ids():
        try:
            out.append(load_manifest(store, backup_id))
        except InvalidBackupError as exc:
            out.append((backup_id, str(exc)))
    return sorted(out, key=lambda m: m.created_ms if isinstance(m, Manifest) else 0)


@dataclass(frozen=True, slots=True)
class VerifySummary:
    manifest: Manifest
    records: int
    tombstones: int
    expired: int  # as of the verification
    raw_bytes: int


def _part_data(store: Store, manifest: Manifest, info: PartInfo) -> bytes:
    try:
        return store.get(f"{manifest.backup_id}/{info.name}")
    except BackupNotFoundError:
        raise InvalidBackupError(f"{info.name} of backup {manifest.backup_id} is missing") from None


def _parts(
    store: Store, manifest: Manifest, kept: dict[str, bytes] | None = None
) -> Iterator[PartReader]:
    """Each part's reader, from `kept` (by name: parts already read, taken
    out as they are used) or else from the store."""
    for info in manifest.parts:
        data = kept.pop(info.name, None) if kept else None
        if data is None:
            data = _part_data(store, manifest, info)
        yield PartReader(info, data, manifest.partitions)


def records(store: Store, manifest: Manifest) -> Iterator[list[bytes]]:
    """Every (key, stored record) of a backup, part after part (each in key order)."""
    for reader in _parts(store, manifest):
        for block in reader.block_rows():
            yield from block


def snapshot_rows(
    url: str, part: int, epoch: int, token: str, timeout: float = 30.0
) -> Iterator[tuple[bytes, bytes]]:
    """One node's (key, stored record) pairs of partition `part`, in key order,
    from its snapshot route (one read transaction); checks the end frame's count."""
    conns = _Connections(timeout)
    snap = _Snapshot(conns, url, part, epoch, token)
    try:
        yield from _rows(None, snap.frames(), snap)
        if snap.end_records != snap.rows_seen:
            raise TransportError(
                f"snapshot of {snap.where}: {snap.rows_seen} records, "
                f"its end frame says {snap.end_records}"
            )
    finally:
        snap.close()
        conns.close()


def verify(store: Store, backup_id: str | None, progress: Progress | None = None) -> VerifySummary:
    """Re-read every part: sizes, sums, every record's order and partition, every
    count. InvalidBackupError at the first thing that is not as the manifest says."""
    manifest = find(store, backup_id)
    now = _now_ms()
    counts: dict[int, int] = {}
    tombstones = expired = raw = 0
    unpack = HEADER.unpack_from
    for reader in _parts(store, manifest):
        for block in reader.block_rows():
            for _, rec in block:
                _, expires, flags, _ = unpack(rec)
                if flags & TOMBSTONE:
                    tombstones += 1
                elif expires and expires <= now:
                    expired += 1
            if progress is not None:
                progress(len(block), 0)
        for part, n in reader.counts.items():
            counts[part] = counts.get(part, 0) + n
        raw += reader.info.raw_size
    check_counts(manifest, counts)
    return VerifySummary(manifest, manifest.records, tombstones, expired, raw)


def delete(store: Store, backup_id: str) -> int:
    """Delete a backup's data (its manifest first); return how many objects went."""
    names = store.names(check_backup_id(backup_id))
    if not names:
        raise BackupNotFoundError(f"no backup {backup_id} in {store.location}")
    manifest = f"{backup_id}/{MANIFEST}"
    if manifest in names:
        store.delete([manifest])
    store.delete([n for n in names if n != manifest])
    return len(names)


def prune(store: Store, policy: Retention, *, dry_run: bool = False) -> Decision:
    """Delete the complete backups `policy` does not keep (`ringkv.retention`)."""
    manifests = [m for m in listing(store) if isinstance(m, Manifest)]
    decision = select([Backup(m.backup_id, m.created_ms) for m in manifests], policy)
    if not dry_run:
        for backup_id in decision.prune:
            delete(store, backup_id)
    return decision


# -- restore -----------------------------------------------------------------------


@dataclass
class RestoreSummary:
    backup_id: str = ""
    records: int = 0  # read from the backup
    written: int = 0  # sent to the cluster (not expired)
    tombstones: int = 0
    expired: int = 0  # skipped: expired before the restore reached them
    kept: int = 0  # the cluster already had that version or a newer one
    # batches written through a coordinator, not by their owners themselves
    # (the ring moved, a change was under way, or too few owners answered)
    coordinated: int = 0
    seconds: float = 0.0


class _Applier:
    """Batches of records to `POST /admin/v1/apply`, a few in flight.

    A batch holds records whose partitions have the same owners, and goes to
    each of those owners as its own (`"replica": epoch`): written there alone,
    with no coordinator in between to group it and send it on again. It is
    done when the consistency level's number of owners wrote it; one that
    did not is left to anti-entropy, as after any quorum write. When that is
    not so (the ring moved, a change is under way, too many owners failed),
    the batch goes through one coordinated apply instead, which reaches the
    new owners too and hints any that are down.
    """

    def __init__(
        self, ring: Ring, token: str, timeout: float, consistency: str, workers: int
    ) -> None:
        self._ring = ring
        self._pool = Pool(workers * 4, timeout)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/msgpack"}
        self._consistency = consistency
        self._executor = cf.ThreadPoolExecutor(workers, thread_name_prefix="ringkv-restore")
        self._sends = cf.ThreadPoolExecutor(workers * 3, thread_name_prefix="ringkv-restore-send")
        self._inflight: deque[cf.Future[int]] = deque()
        self._limit = workers * 2
        self.kept = 0
        self.coordinated = 0  # batches that went through the coordinated apply
        self._lock = threading.Lock()

    def send(self, owners: tuple[str, ...], rows: list[list[bytes]]) -> None:
        self._inflight.append(self._executor.submit(self._apply, owners, rows))
        while len(self._inflight) > self._limit:
            self._inflight.popleft().result()

    def _apply(self, owners: tuple[str, ...], rows: list[list[bytes]]) -> int:
        kept = self._apply_replicas(owners, rows)
        if kept is None:
            kept = self._apply_coordinated(owners[0], rows)
            with self._lock:
                self.coordinated += 1
        with self._lock:
            self.kept += kept
        return kept

    def _apply_replicas(self, owners: tuple[str, ...], rows: list[list[bytes]]) -> int | None:
        """Every owner writes the batch as its own; the records the owners that
        wrote it already held (the most any of them did), or None when fewer
        than the consistency level's owners wrote it."""
        body = msgpack.packb({"records": rows, "replica": self._ring.epoch}, use_bin_type=True)

        def one(owner: str) -> int | None:
            url = self._ring.member(owner).url
            try:
                req = Request("POST", f"{url}/admin/v1/apply", body, self._headers)
                return int(json.loads(decode(self._pool.send(req)).body)["kept"])
            except (TransportError, ResponseError, ValueError, KeyError):
                return None  # the coordinated apply will say what is wrong, if anything

        answers = [a for a in self._sends.map(one, owners) if a is not None]
        if len(answers) < _needed(self._consistency, len(owners)):
            return None
        return max(answers)

    def _apply_coordinated(self, member: str, rows: list[list[bytes]]) -> int:
        doc: dict[str, Any] = {"records": rows, "consistency": self._consistency}
        body = msgpack.packb(doc, use_bin_type=True)
        urls = [self._ring.member(member).url] + [
            m.url for m in self._ring.members if m.id != member
        ]
        error: Exception | None = None
        for attempt in range(6):  # applying the same records again is harmless (LWW)
            url = urls[attempt % len(urls)]
            try:
                resp = decode(
                    self._pool.send(Request("POST", f"{url}/admin/v1/apply", body, self._headers))
                )
                return int(json.loads(resp.body)["kept"])
            except (TransportError, UnavailableError, NotEnoughReplicasError) as exc:
                error = exc  # applying the same records again is harmless: retry
                time.sleep(min(2.0, 0.1 * 2**attempt))
        assert error is not None
        raise BackupFailedError(f"restore: {len(rows)} records could not be written: {error}")

    def finish(self) -> None:
        try:
            while self._inflight:
                self._inflight.popleft().result()
        finally:
            self._executor.shutdown(cancel_futures=True)
            self._sends.shutdown(cancel_futures=True)
            self._pool.close()


def restore(
    store: Store,
    backup_id: str | None,
    seeds: list[str],
    token: str,
    *,
    consistency: str = "quorum",
    batch: int = RESTORE_BATCH,
    workers: int = 4,
    timeout: float = 30.0,
    progress: Progress | None = None,
    now_ms: Callable[[], int] = _now_ms,
    keep_bytes: int = KEEP_BYTES,
) -> RestoreSummary:
    """Write backup `backup_id` (None: the newest) into the cluster at `seeds`.

    Every part's size and sum are checked before anything is written. The
    parts checked are kept in memory, up to `keep_bytes` of them, for the
    writing; the others are read from the store again (and checked again).
    """
    if not 1 <= batch <= MAX_RESTORE_BATCH:
        raise ValueError(f"a restore batch is 1 to {MAX_RESTORE_BATCH} records, not {batch}")
    started = time.perf_counter()
    manifest = find(store, backup_id)
    kept: dict[str, bytes] = {}
    room = keep_bytes
    for info in manifest.parts:  # every sum before any write
        data = _part_data(store, manifest, info)
        check_stored(info, data)
        if len(data) <= room:
            kept[info.name] = data
            room -= len(data)
        del data
    with Client(seeds, token=token, timeout=timeout) as kv:
        ring = kv.ring()
    summary = RestoreSummary(manifest.backup_id)
    applier = _Applier(ring, token, timeout, consistency, workers)
    buffers: dict[tuple[str, ...], list[list[bytes]]] = {}  # by the partitions' owners
    counts: dict[int, int] = {}
    owners_of = [ring.owners(p) for p in range(ring.partitions)]
    part_of = ring.partition_of
    # The backup's partitions are the ring's (same Q, same hash): a block,
    # one backup partition, goes to that partition's owners whole.
    same_partitions = manifest.partitions == ring.partitions
    unpack = HEADER.unpack_from

    def queue(owners: tuple[str, ...], rows: list[list[bytes]]) -> None:
        """Buffer `rows` for `owners`; send every whole batch of them."""
        buf = buffers.setdefault(owners, [])
        buf += rows
        while len(buf) >= batch:
            applier.send(owners, buf[:batch])
            summary.written += batch
            buf = buffers[owners] = buf[batch:]

    try:
        for reader in _parts(store, manifest, kept):
            now = now_ms()
            for part, block in reader.partition_blocks():
                live = []  # the block less what expired
                for row in block:
                    _, expires, flags, _ = unpack(row[1])
                    if flags & TOMBSTONE:
                        summary.tombstones += 1
                    elif expires and expires <= now:
                        summary.expired += 1
                        continue
                    live.append(row)
                if same_partitions and part >= 0:
                    queue(owners_of[part], live)
                else:  # another Q: each record by its partition in the target ring
                    by_owners: dict[tuple[str, ...], list[list[bytes]]] = {}
                    for row in live:
                        by_owners.setdefault(owners_of[part_of(row[0])], []).append(row)
                    for owners, rows in by_owners.items():
                        queue(owners, rows)
                summary.records += len(block)
                if progress is not None:
                    progress(len(block), 0)
            for part, n in reader.counts.items():
                counts[part] = counts.get(part, 0) + n
        check_counts(manifest, counts)
        for owners, buf in buffers.items():
            if buf:
                applier.send(owners, buf)
                summary.written += len(buf)
    finally:
        applier.finish()
    summary.kept = applier.kept
    summary.coordinated = applier.coordinated
    summary.seconds = time.perf_counter() - started
    return summary
