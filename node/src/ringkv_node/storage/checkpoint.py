"""Checkpoints: the LMDB snapshot a crash rolls back to before the log replays.

LMDB commits unsynced (`wal` makes each batch durable), so after a power loss
its file may hold a meta page (the root of the newest snapshot) whose pages
never reached the disk. A checkpoint therefore records one snapshot that is
known to be whole:

1. between two commits, the event loop opens a read transaction on the snapshot
   just committed (LMDB never reuses a page a reader can still see, so that
   snapshot's pages stay exactly as they are until the reader goes) and copies
   the file's two meta pages, which describe it;
2. the file is fdatasync'd: every page of that snapshot is on disk;
3. this file is written (atomically: temporary file, fsync, rename, fsync of
   the directory) with the meta pages and the first log segment after them;
4. only then the previous checkpoint's reader is let go and older log
   segments are deleted.

Opening a node writes the saved meta pages back over the file's (a crash
between checkpoints, or none: the snapshot is whole either way), and replays
the log from that segment on. The price is disk space: pages replaced since
the last checkpoint cannot be reused before the next, about a second of
writes.
"""

from __future__ import annotations

import ctypes
import os
import struct
import time
import zlib
from typing import NamedTuple

from ringkv_node.storage.wal import sync_dir

__all__ = [
    "FILE",
    "Checkpoint",
    "CheckpointError",
    "load",
    "meta_txnid",
    "restore",
    "save",
    "write_back",
]

FILE = "checkpoint"
_MAGIC = b"RKVCKPT1"
_HEAD = struct.Struct("<8sIQQ")  # magic, page size, txn id, first log segment
_TXNID_AT = 144  # offset of mm_txnid in an LMDB 0.9 meta page (page header + MDB_meta)
_TXNID = struct.Struct("<Q")
_WRITE_BACK_CHUNK = 1 << 20
_CLEAN_CHUNK_S = 0.0002  # a chunk with nothing to write returns faster than this
_SYNC_FILE_RANGE_ALL = 1 | 2 | 4  # WAIT_BEFORE | WRITE | WAIT_AFTER
_sync_file_range = getattr(ctypes.CDLL(None), "sync_file_range", None)  # libc, on Linux
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    _sync_file_range.restype = ctypes.c_int


def write_back(fd: int) -> None:
    """Write a file's dirty pages out a megabyte at a time (Linux), pausing
    after each chunk that had any, so that the fdatasync after it finds little
    to do. One fdatasync of a second's worth of pages queued ahead of the
    log's small syncs, which waited behind it: durable writes' p99 rose from
    about 20 to 70 ms on the benchmark; paced, it stays near 20-25 ms."""
    if _sync_file_range is None:
        return
    size = os.fstat(fd).st_size
    for offset in range(0, size, _WRITE_BACK_CHUNK):
        started = time.monotonic()
        if _sync_file_range(fd, offset, _WRITE_BACK_CHUNK, _SYNC_FILE_RANGE_ALL) != 0:
            return  # not supported here: the fdatasync does it all
        took = time.monotonic() - started
        if took > _CLEAN_CHUNK_S:  # it wrote: leave the disk (and the core) as long again
            time.sleep(took)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be trusted (the node will not guess)."""


class Checkpoint(NamedTuple):
    page_size: int
    txnid: int  # the snapshot's LMDB transaction id
    wal_seq: int  # the first log segment written after it
    metas: bytes  # the file's first two pages (LMDB's two meta pages) at the snapshot


def meta_txnid(metas: bytes, page_size: int) -> int:
    """The newest transaction id the two meta pages name."""
    first: int = _TXNID.unpack_from(metas, _TXNID_AT)[0]
    second: int = _TXNID.unpack_from(metas, page_size + _TXNID_AT)[0]
    return max(first, second)


def save(directory: str, ckpt: Checkpoint) -> None:
    body = _HEAD.pack(_MAGIC, ckpt.page_size, ckpt.txnid, ckpt.wal_seq) + ckpt.metas
    data = body + struct.pack("<I", zlib.crc32(body))
    path = os.path.join(directory, FILE)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    sync_dir(directory)


def load(directory: str) -> Checkpoint | None:
    """The saved checkpoint; None when there is none (a new or older node)."""
    try:
        with open(os.path.join(directory, FILE), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    if len(data) < _HEAD.size + 4:
        raise CheckpointError(f"{FILE} is truncated ({len(data)} bytes)")
    body, (crc,) = data[:-4], struct.unpack("<I", data[-4:])
    if zlib.crc32(body) != crc:
        raise CheckpointError(f"{FILE} fails its checksum")
    magic, page_size, txnid, wal_seq = _HEAD.unpack_from(body)
    metas = body[_HEAD.size :]
    if magic != _MAGIC or len(metas) != 2 * page_size:
        raise CheckpointError(f"{FILE} is not a ringkv checkpoint")
    return Checkpoint(page_size, txnid, wal_seq, metas)


def restore(data_file: str, ckpt: Checkpoint) -> None:
    """Put the checkpoint's meta pages back: LMDB then opens at its snapshot."""
    fd = os.open(data_file, os.O_RDWR)
    try:
        if os.pread(fd, len(ckpt.metas), 0) != ckpt.metas:
            os.pwrite(fd, ckpt.metas, 0)
            os.fdatasync(fd)
    finally:
        os.close(fd)
