"""The write-ahead log: what makes a group commit durable with one small fsync.

A durable LMDB commit writes every B-tree page the batch touched and syncs
them, then the meta page, then syncs again: with random keys that is one 4 KiB
page per key, and it was what bounded a node's durable writes. So `storage`
commits LMDB without syncing and appends the batch's changes here instead, as
one record (one sequential write, one fdatasync); every second or so a
checkpoint syncs LMDB itself and the log before it is deleted (`storage`
keeps that snapshot's pages intact until the next one).

A record is the batch's physical changes, replayed exactly by `storage` on top
of the last checkpoint after a crash: put or delete of a key in one of the
sub-databases, in the order they were made. A bulk write's puts travel as one
change (`PutMany`), their keys and values in one msgpack array, so a batch
of a thousand keys costs one C call to log, not a thousand headers.

    change  u8 db << 1          u32 key length, u32 value length, key, value
            u8 db << 1 | 1      u32 key length, key                 (delete)
            u8 0x80 | db << 1   u32 length, msgpack [[key, value], ...] (puts)

Files: `wal-<seq>.log` segments (a new one at each checkpoint), each a magic
line then frames `u32 length, u32 crc32, payload`. A frame that is short or
fails its CRC ends the log there: it is the torn tail of a write that was
never acknowledged.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator, Sequence

import msgpack

__all__ = [
    "MAGIC",
    "Change",
    "Mutation",
    "PutMany",
    "Wal",
    "WalError",
    "decode",
    "encode",
    "frames",
    "sync_dir",
]

MAGIC = b"RKVWAL1\n"
_FRAME = struct.Struct("<II")  # payload length, crc32
_PUT = struct.Struct("<BII")  # db << 1, key length, value length
_DEL = struct.Struct("<BI")  # db << 1 | 1, key length; also 0x80 | db << 1, length
_MANY = 0x80
_SEGMENT = "wal-{:016d}.log"

# (sub-database index, key, value; None: the key was deleted)
Mutation = tuple[int, bytes, bytes | None]
# (sub-database index, [(key, value), ...]): puts, in order
PutMany = tuple[int, list[tuple[bytes, bytes]]]
Change = Mutation | PutMany


class WalError(ValueError):
    """A record that does not decode (never one this module wrote intact)."""


def encode(changes: Sequence[Change]) -> bytes:
    """One record's payload: the changes of one committed transaction."""
    parts: list[bytes] = []
    add = parts.append
    put, delete = _PUT.pack, _DEL.pack
    for change in changes:
        if len(change) == 2:
            db, pairs = change
            body = msgpack.packb(pairs, use_bin_type=True)
            add(delete(_MANY | db << 1, len(body)))
            add(body)
            continue
        db, key, value = change
        if value is None:
            add(delete(db << 1 | 1, len(key)))
            add(key)
        else:
            add(put(db << 1, len(key), len(value)))
            add(key)
            add(value)
    return b"".join(parts)


def decode(payload: bytes) -> list[Mutation]:
    """The changes `encode` packed, in order."""
    out: list[Mutation] = []
    pos, end = 0, len(payload)
    view = memoryview(payload)
    while pos < end:
        if pos + _DEL.size > end:
            raise WalError(f"truncated change header at byte {pos}")
        tag = payload[pos]
        if tag & _MANY:
            _, blen = _DEL.unpack_from(payload, pos)
            pos += _DEL.size
            if pos + blen > end:
                raise WalError(f"truncated puts at byte {pos}")
            try:
                pairs = msgpack.unpackb(view[pos : pos + blen], use_list=False)
                db = (tag & ~_MANY) >> 1
                out.extend((db, key, value) for key, value in pairs)
            except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
                raise WalError(f"puts at byte {pos} do not decode: {exc}") from None
            pos += blen
        elif tag & 1:
            _, klen = _DEL.unpack_from(payload, pos)
            pos += _DEL.size
            if pos + klen > end:
                raise WalError(f"truncated key at byte {pos}")
            out.append((tag >> 1, bytes(view[pos : pos + klen]), None))
            pos += klen
        else:
            if pos + _PUT.size > end:
                raise WalError(f"truncated change header at byte {pos}")
            _, klen, vlen = _PUT.unpack_from(payload, pos)
            pos += _PUT.size
            if pos + klen + vlen > end:
                raise WalError(f"truncated key or value at byte {pos}")
            key = bytes(view[pos : pos + klen])
            pos += klen
            out.append((tag >> 1, key, bytes(view[pos : pos + vlen])))
            pos += vlen
    return out


def frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def frames(data: bytes) -> tuple[list[bytes], int]:
    """The intact payloads of one segment's bytes, and where the intact part ends."""
    if not data.startswith(MAGIC):
        return [], 0
    out: list[bytes] = []
    pos = len(MAGIC)
    while pos + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, pos)
        start = pos + _FRAME.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        out.append(payload)
        pos = start + length
    return out, pos


class Wal:
    """The segments in one directory; appends go to the newest."""

    def __init__(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        self._fd: int | None = None
        self.seq = 0  # the segment appends go to (0: none open yet)
        self.appended = 0  # bytes appended since the segment was opened
        self.failed: str | None = None  # why appends are refused (a write or sync failed)

    def segments(self) -> list[int]:
        """Sequence numbers of the segments on disk, oldest first."""
        seqs = []
        for name in os.listdir(self.path):
            if name.startswith("wal-") and name.endswith(".log"):
                try:
                    seqs.append(int(name[4:-4]))
                except ValueError:
                    continue
        return sorted(seqs)

    def _file(self, seq: int) -> str:
        return os.path.join(self.path, _SEGMENT.format(seq))

    def records(self, first: int) -> Iterator[bytes]:
        """Payloads of every segment from `first` on, in order, up to the first
        torn frame: what follows a lost record is not replayed without it."""
        for seq in self.segments():
            if seq < first:
                continue
            with open(self._file(seq), "rb") as f:
                data = f.read()
            payloads, end = frames(data)
            yield from payloads
            if end < len(data):
                return

    def rotate(self) -> int:
        """Start a new segment (durably created) and append there from now on."""
        seq = max([self.seq, *self.segments()]) + 1
        fd = os.open(self._file(seq), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            os.write(fd, MAGIC)
            os.fdatasync(fd)
            sync_dir(self.path)
        except BaseException:
            os.close(fd)
            raise
        old, self._fd, self.seq, self.appended = self._fd, fd, seq, 0
        if old is not None:
            os.close(old)
        return seq

    def append_many(self, payloads: list[bytes], *, sync: bool) -> None:
        """Append records in one write; with `sync`, durable on return.

        After a failed write or sync nothing more is appended (`failed`): a
        later record replayed without the one that failed would not restore a
        state that ever existed, and after a failed fsync the kernel may have
        dropped the pages it could not write (as PostgreSQL, the node then
        wants a restart, which replays from the last checkpoint)."""
        if self.failed is not None:
            raise OSError(self.failed)
        if self._fd is None:
            raise WalError("the log has no open segment")
        data = b"".join([frame(payload) for payload in payloads])
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
            if sync:
                os.fdatasync(self._fd)
        except OSError as exc:
            self.failed = f"the write-ahead log failed ({exc}); restart the node"
            raise OSError(self.failed) from exc
        self.appended += written

    def drop_before(self, seq: int) -> None:
        """Delete the segments older than `seq` (a checkpoint covers them)."""
        for old in self.segments():
            if old < seq:
                os.unlink(self._file(old))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def sync_dir(path: str) -> None:
    """Make a directory's entries (a file created, renamed or deleted) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
