"""The backup format: a JSON manifest and zstandard-compressed parts of records.

A backup is laid out by partition and key, not by node, so it restores into
a cluster of any size, partition count Q or replication factor N:

    <destination>/<backup id>/manifest.json
    <destination>/<backup id>/part-00000.zst, part-00001.zst, ...

A part is one zstandard frame. Decompressed, it is a sequence of msgpack
arrays ("blocks", about 1 MiB or less each), each a list of `[key, record]`
pairs: `key` the key's bytes, `record` the key's stored record in the node's
packed layout (`ringkv.packed`: version, expiry, tombstone flag, value),
byte for byte. Records are in (partition, key) order across the parts of a
backup; a partition may span parts. A part holds at most `part_size` bytes
of records (raw, before compression; default 64 MiB) plus one block.
Tombstones younger than the cluster's tombstone grace are in it (a restore
keeps deleted keys deleted), and so are records that had expired but were
not purged yet (a restore skips them).

The manifest is written last: a backup without one is incomplete.

    {"format": "ringkv-backup", "format_version": 1, "ringkv_version": "0.1.0",
     "cluster": "kv", "backup_id": "20261203T101500Z-7f3a",
     "created_at": "2026-12-03T10:15:00.123Z", "created_ms": 1796292900123,
     "completed_at": "...", "completed_ms": ...,
     "ring_epoch": 1, "partitions": 256, "replication_factor": 3,
     "read_consistency": "quorum",
     "records": 50000, "partition_records": [195, 201, ...],    # one count per partition
     "parts": [{"name": "part-00000.zst", "size": 1234567, "sha256": "...",
                "raw_size": 4567890, "records": 30000,
                "first_partition": 0, "last_partition": 150}, ...],
     "size_bytes": 2345678}

Everything here is pure (bytes in, values out); reading and writing the
destination is `ringkv.stores`, talking to the cluster `ringkv.backup`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack
import zstandard

from ringkv.errors import InvalidBackupError, InvalidKeyError
from ringkv.keys import STORABLE, check_keys
from ringkv.packed import HEADER, HEADER_SIZE, newer
from ringkv.ring import partitioner

__all__ = [
    "BLOCK_BYTES",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "InvalidBackupError",
    "Manifest",
    "PartInfo",
    "PartReader",
    "PartWriter",
    "check_backup_id",
    "check_text",
    "merge_newest",
    "part_name",
]

FORMAT = "ringkv-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BLOCK_BYTES = 1 << 20
DEFAULT_PART_SIZE = 64 << 20
ZSTD_LEVEL = 1  # the default; any level reads back the same (it is not in the format)
ZSTD_LEVELS = range(1, 20)
_COMPRESS_BYTES = 8 << 20  # raw bytes handed to the compressor a call (`PartWriter`)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_backup_id(text: str) -> str:
    """A backup id: letters, digits, `.`, `_`, `-` (a directory or key name)."""
    if not _ID.match(text):
        raise ValueError(
            f"backup id {text!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return text


def part_name(index: int) -> str:
    return f"part-{index:05d}.zst"


@dataclass(frozen=True, slots=True)
class PartInfo:
    name: str
    size: int  # bytes stored (compressed)
    sha256: str  # of the stored bytes
    raw_size: int  # bytes of records, decompressed
    records: int
    first_partition: int
    last_partition: int


@dataclass(frozen=True, slots=True)
class Manifest:
    cluster: str
    backup_id: str
    created_ms: int
    completed_ms: int
    ringkv_version: str
    ring_epoch: int
    partitions: int
    replication_factor: int
    read_consistency: str
    partition_records: list[int]
    parts: list[PartInfo]
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # unknown fields, kept

    @property
    def records(self) -> int:
        return sum(self.partition_records)

    @property
    def size_bytes(self) -> int:
        return sum(p.size for p in self.parts)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "format": FORMAT,
            "format_version": self.format_version,
            "ringkv_version": self.ringkv_version,
            "cluster": self.cluster,
            "backup_id": self.backup_id,
            "created_at": iso_ms(self.created_ms),
            "created_ms": self.created_ms,
            "completed_at": iso_ms(self.completed_ms),
            "completed_ms": self.completed_ms,
            "ring_epoch": self.ring_epoch,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "read_consistency": self.read_consistency,
            "records": self.records,
            "size_bytes": self.size_bytes,
            "partition_records": self.partition_records,
            "parts": [asdict(p) for p in self.parts],
            **self.extra,
        }
        return json.dumps(doc, indent=1).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """The manifest in `data`, checked; InvalidBackupError says what is wrong."""
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
            raise InvalidBackupError(f"{MANIFEST} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise InvalidBackupError(f"{MANIFEST} is not a {FORMAT} manifest")
        version = doc.get("format_version")
        if version != FORMAT_VERSION:
            raise InvalidBackupError(
                f"{MANIFEST}: format_version {version!r} is not one this ringkv reads "
                f"({FORMAT_VERSION})"
            )
        try:
            q = _int(doc, "partitions", 1)
            partitioner(q)  # a power of two
            counts = doc["partition_records"]
            if not isinstance(counts, list) or len(counts) != q:
                raise ValueError(f"partition_records must list {q} counts")
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                raise ValueError("partition_records must be counts")
            parts = [_part(i, p, q) for i, p in enumerate(_list(doc, "parts"))]
            manifest = cls(
                cluster=_str(doc, "cluster"),
                backup_id=check_backup_id(_str(doc, "backup_id")),
                created_ms=_int(doc, "created_ms", 0),
                completed_ms=_int(doc, "completed_ms", 0),
                ringkv_version=_str(doc, "ringkv_version"),
                ring_epoch=_int(doc, "ring_epoch", 1),
                partitions=q,
                replication_factor=_int(doc, "replication_factor", 1),
                read_consistency=_str(doc, "read_consistency"),
                partition_records=counts,
                parts=parts,
                extra={k: v for k, v in doc.items() if k not in _KNOWN},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidBackupError(f"{MANIFEST}: {_reason(exc)}") from None
        # a time past year 9999 cannot be shown, and would make a forged
        # backup the "latest" that retention keeps over the real ones
        if not manifest.created_ms <= manifest.completed_ms <= _LAST_MS:
            raise InvalidBackupError(
                f"{MANIFEST}: created_ms {manifest.created_ms} and completed_ms "
                f"{manifest.completed_ms} must be times in order, before the year 10000"
            )
        if sum(p.records for p in parts) != manifest.records:
            raise InvalidBackupError(
                f"{MANIFEST}: its parts hold {sum(p.records for p in parts)} records, "
                f"its partitions {manifest.records}"
            )
        for key in ("records", "size_bytes"):
            if key in doc and doc[key] != getattr(manifest, key):
                raise InvalidBackupError(f"{MANIFEST}: {key} does not add up")
        return manifest


_KNOWN = {
    "format",
    "format_version",
    "ringkv_version",
    "cluster",
    "backup_id",
    "created_at",
    "created_ms",
    "completed_at",
    "completed_ms",
    "ring_epoch",
    "partitions",
    "replication_factor",
    "read_consistency",
    "records",
    "size_bytes",
    "partition_records",
    "parts",
}


def _reason(exc: Exception) -> str:
    return f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)


def _str(doc: dict[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return check_text(name, value)


def check_text(name: str, value: str) -> str:
    """`value` unless it holds control characters or line breaks (ValueError):
    a manifest's strings are shown by `backup list`, to a terminal."""
    if not value.isprintable():
        raise ValueError(f"{name} must be printable text, not {value!r}")
    return value


_LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def _int(doc: dict[str, Any], name: str, minimum: int) -> int:
    value = doc[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}")
    return value


def _list(doc: dict[str, Any], name: str) -> list[Any]:
    value = doc[name]
    if not isinstance(value, list):
        raise ValueError(f"{name} must be a list")
    return value


def _part(index: int, doc: Any, partitions: int) -> PartInfo:
    if not isinstance(doc, dict):
        raise ValueError(f"parts[{index}] must be an object")
    info = PartInfo(
        name=_str(doc, "name"),
        size=_int(doc, "size", 0),
        sha256=_str(doc, "sha256"),
        raw_size=_int(doc, "raw_size", 0),
        records=_int(doc, "records", 0),
        first_partition=_int(doc, "first_partition", 0),
        last_partition=_int(doc, "last_partition", 0),
    )
    if info.name != part_name(index):
        raise ValueError(f"parts[{index}] must be named {part_name(index)}")
    if not re.fullmatch(r"[0-9a-f]{64}", info.sha256):
        raise ValueError(f"parts[{index}].sha256 is not a SHA-256 in hex")
    if not info.first_partition <= info.last_partition < partitions:
        raise ValueError(f"parts[{index}]: partitions out of range")
    return info


def iso_ms(ms: int) -> str:
    """Unix ms as `2026-12-03T10:15:00.123Z` (UTC)."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


# -- merging replicas ------------------------------------------------------------


Row = tuple[bytes, bytes]  # key, packed record


def merge_newest(a: Iterable[Row], b: Iterable[Row]) -> Iterator[Row]:
    """Two replicas' records of one partition, each in key order, merged: every
    key once, with the newest of its records (last writer wins). Merge more
    replicas by merging merges."""
    ia, ib = iter(a), iter(b)
    ra = next(ia, None)
    rb = next(ib, None)
    while ra is not None and rb is not None:
        ka, kb = ra[0], rb[0]
        if ka < kb:
            yield ra
            ra = next(ia, None)
        elif kb < ka:
            yield rb
            rb = next(ib, None)
        else:
            yield rb if newer(rb[1], ra[1]) else ra
            ra = next(ia, None)
            rb = next(ib, None)
    if ra is not None:
        yield ra
        yield from ia
    if rb is not None:
        yield rb
        yield from ib


def blocks(rows: Iterable[Row], block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[bytes, int]]:
    """`rows` packed as blocks (msgpack arrays of `[key, record]`): (block, count)."""
    batch: list[Row] = []
    size = 0
    for row in rows:
        batch.append(row)
        size += len(row[0]) + len(row[1]) + 8
        if size >= block_bytes:
            yield msgpack.packb(batch, use_bin_type=True), len(batch)
            batch, size = [], 0
    if batch:
        yield msgpack.packb(batch, use_bin_type=True), len(batch)


# -- parts -----------------------------------------------------------------------


class PartWriter:
    """Blocks in, compressed parts out, each closed once it holds `part_size` raw bytes."""

    def __init__(self, part_size: int = DEFAULT_PART_SIZE, level: int = ZSTD_LEVEL) -> None:
        if part_size < 1:
            raise ValueError("part size must be at least 1 byte")
        if level not in ZSTD_LEVELS:
            raise ValueError(f"zstandard level must be 1 to 19, not {level}")
        self.part_size = part_size
        self._params = zstandard.ZstdCompressor(level=level)
        self.index = 0
        self._new()

    def _new(self) -> None:
        self._chunks: list[bytes] = []
        self._compressor = self._params.compressobj()
        self._waiting: list[bytes] = []  # blocks not yet handed to the compressor
        self._waiting_bytes = 0
        self._raw = 0
        self._records = 0
        self._first: int | None = None
        self._last = 0

    @property
    def empty(self) -> bool:
        return self._raw == 0

    def add(self, partition: int, block: bytes, count: int) -> tuple[bytes, PartInfo] | None:
        """Add one block of `partition`'s records; a finished part when this filled one."""
        if self._first is None:
            self._first = partition
        self._last = partition
        self._waiting.append(block)
        self._waiting_bytes += len(block)
        if self._waiting_bytes >= _COMPRESS_BYTES:
            self._compress()
        self._raw += len(block)
        self._records += count
        return self.finish() if self._raw >= self.part_size else None

    def _compress(self) -> None:
        """Hand the waiting blocks to the compressor in one call: it lets the GIL
        go while it works, and each call must win it back from the threads
        reading snapshots (up to a switch interval, 5 ms, a call): a call a
        block cost a backup more than the compressing did."""
        if self._waiting:
            self._chunks.append(self._compressor.compress(b"".join(self._waiting)))
            self._waiting, self._waiting_bytes = [], 0

    def finish(self) -> tuple[bytes, PartInfo]:
        """Close the part being written (the last one may be small)."""
        self._compress()
        self._chunks.append(self._compressor.flush())
        data = b"".join(self._chunks)
        info = PartInfo(
            name=part_name(self.index),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            raw_size=self._raw,
            records=self._records,
            first_partition=self._first or 0,
            last_partition=self._last,
        )
        self.index += 1
        self._new()
        return data, info


def check_stored(info: PartInfo, data: bytes) -> None:
    """Raise InvalidBackupError unless `data` is the part `info` describes (size, sum)."""
    if len(data) != info.size:
        raise InvalidBackupError(
            f"{info.name} is {len(data)} bytes; the manifest says {info.size} (truncated?)"
        )
    if hashlib.sha256(data).hexdigest() != info.sha256:
        raise InvalidBackupError(f"{info.name}: SHA-256 does not match the manifest (corrupt)")


_UNSEEN = -2  # `partition_blocks`: no row of the block seen yet


class PartReader:
    """The blocks of one stored part, checked against its manifest entry.

    `rows()` yields `(partition, key, record)` in order and raises
    InvalidBackupError at the first thing that is not as the manifest says:
    bad zstandard or msgpack, a record that is not packed, keys out of
    order or outside the part's partitions, or counts that do not match
    (`counts` is filled per partition as it goes).
    """

    def __init__(self, info: PartInfo, data: bytes, partitions: int) -> None:
        check_stored(info, data)
        self.info = info
        self._data = data
        self._part_of = partitioner(partitions)
        self.counts: dict[int, int] = {}

    def block_rows(self) -> Iterator[list[list[bytes]]]:
        """Decompressed blocks, each a list of `[key, record]` (checked as `rows`)."""
        for _, block in self.partition_blocks():
            yield block

    def partition_blocks(self) -> Iterator[tuple[int, list[list[bytes]]]]:
        """`block_rows` as (partition, block): the partition every row of the
        block is in (a backup writes each block from one partition's
        snapshot), or -1 for a block whose rows are in more than one."""
        info = self.info
        try:
            dec = zstandard.ZstdDecompressor().decompressobj()
            raw = dec.decompress(self._data)
            if not dec.eof:
                raise InvalidBackupError(f"{info.name}: the zstandard frame is truncated")
        except zstandard.ZstdError as exc:
            raise InvalidBackupError(f"{info.name}: not zstandard data ({exc})") from None
        if len(raw) != info.raw_size:
            raise InvalidBackupError(
                f"{info.name} holds {len(raw)} bytes of records; the manifest says {info.raw_size}"
            )
        unpacker = msgpack.Unpacker(raw=True, max_buffer_size=len(raw) + 1)
        unpacker.feed(raw)
        part_of = self._part_of
        counts = self.counts
        last: tuple[int, bytes] | None = None
        total = 0
        try:
            for block in unpacker:
                if not isinstance(block, list):
                    raise InvalidBackupError(f"{info.name}: a block is not a list")
                block_part = _UNSEEN
                for row in block:
                    if not (isinstance(row, list) and len(row) == 2):
                        raise InvalidBackupError(f"{info.name}: a row is not [key, record]")
                    key, rec = row
                    if not isinstance(key, bytes) or not isinstance(rec, bytes):
                        raise InvalidBackupError(f"{info.name}: key and record must be bytes")
                    if len(rec) < HEADER_SIZE or len(rec) < HEADER_SIZE + rec[HEADER_SIZE - 1]:
                        raise InvalidBackupError(f"{info.name}: a record of {key!r} is cut short")
                    here = (part_of(key), key)
                    if last is not None and here <= last:
                        raise InvalidBackupError(
                            f"{info.name}: keys out of (partition, key) order at {key!r}"
                        )
                    if not info.first_partition <= here[0] <= info.last_partition:
                        raise InvalidBackupError(
                            f"{info.name}: {key!r} is in partition {here[0]}, outside the "
                            f"part's {info.first_partition}..{info.last_partition}"
                        )
                    last = here
                    counts[here[0]] = counts.get(here[0], 0) + 1
                    if here[0] != block_part:
                        block_part = here[0] if block_part == _UNSEEN else -1
                try:  # a key no node would hold: not a backup ringkv wrote
                    check_keys([row[0] for row in block], STORABLE)
                except InvalidKeyError as exc:
                    raise InvalidBackupError(f"{info.name}: {exc.message}") from None
                total += len(block)
                yield max(block_part, -1), block  # an empty block: -1
        except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as exc:
            if isinstance(exc, InvalidBackupError):
                raise
            raise InvalidBackupError(f"{info.name}: not msgpack blocks ({exc})") from None
        if total != info.records:
            raise InvalidBackupError(
                f"{info.name} holds {total} records; the manifest says {info.records}"
            )


def check_counts(manifest: Manifest, counts: dict[int, int]) -> None:
    """Raise InvalidBackupError unless `counts` (records per partition, from
    every part) are the manifest's."""
    for part, expected in enumerate(manifest.partition_records):
        found = counts.get(part, 0)
        if found != expected:
            raise InvalidBackupError(
                f"partition {part} holds {found} records; the manifest says {expected}"
            )


def expires_of(rec: bytes) -> int:
    """A packed record's absolute expiry (0: none)."""
    return int(HEADER.unpack_from(rec)[1])
