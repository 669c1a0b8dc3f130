"""The stored record: value, version, tombstone and expiry, packed for LMDB.

A record is what one replica holds for one key. It is packed with a fixed
header so reads decode it without parsing JSON:

    ts:u64  expires_ms:u64  flags:u8  node_len:u8  node:bytes  value:bytes

`expires_ms` is 0 when the key has no TTL. A tombstone (flag bit 0) has no
value; it remembers the delete's version so an older write replayed later
(hint, repair, anti-entropy) cannot resurrect the key. Pure: no I/O.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ringkv.versions import Version

__all__ = [
    "HEADER_SIZE",
    "Record",
    "decode",
    "encode",
    "header",
    "is_live",
    "is_live_raw",
    "newer_raw",
    "pack",
]

_HEADER = struct.Struct(">QQBB")
HEADER_SIZE = _HEADER.size
_TOMBSTONE = 0x01


class Record(NamedTuple):
    """One replica's record for one key (a named tuple: cheap on every read)."""

    version: Version
    value: bytes = b""
    tombstone: bool = False
    expires_ms: int = 0  # absolute wall-clock ms; 0 = never

    def newer_than(self, other: Record | None) -> bool:
        return other is None or self.version > other.version


def encode(rec: Record) -> bytes:
    node = rec.version.node.encode("utf-8")
    if len(node) > 255:
        raise ValueError("member id longer than 255 bytes")
    flags = _TOMBSTONE if rec.tombstone else 0
    return _HEADER.pack(rec.version.ts, rec.expires_ms, flags, len(node)) + node + rec.value


def pack(ts: int, expires_ms: int, tombstone: bool, node: bytes, value: bytes) -> bytes:
    """A record packed straight from its fields (`node` as UTF-8): the bulk
    path stamps records without building a `Record` for each."""
    return _HEADER.pack(ts, expires_ms, _TOMBSTONE if tombstone else 0, len(node)) + node + value


_new = tuple.__new__  # builds a named tuple without its Python-level __new__


def decode(raw: bytes) -> Record:
    """The record packed in `raw` (every read decodes one: kept lean)."""
    ts, expires_ms, flags, node_len = _HEADER.unpack_from(raw)
    end = HEADER_SIZE + node_len
    version = _new(Version, (ts, raw[HEADER_SIZE:end].decode("utf-8")))
    return _new(Record, (version, raw[end:], flags & _TOMBSTONE != 0, expires_ms))


def header(raw: bytes) -> tuple[int, int, bool, bytes]:
    """`(ts, expires_ms, tombstone, node)` of a packed record, without unpacking its
    value: a replica stores a peer's records as they came. `node` stays UTF-8
    bytes (byte order is code-point order, so versions compare the same way).
    Raises ValueError when `raw` is not a packed record.
    """
    if len(raw) < HEADER_SIZE:
        raise ValueError("record shorter than its header")
    ts, expires_ms, flags, node_len = _HEADER.unpack_from(raw)
    end = HEADER_SIZE + node_len
    if len(raw) < end:
        raise ValueError("record shorter than its member id")
    node = raw[HEADER_SIZE:end]
    node.decode("utf-8")  # UnicodeDecodeError is a ValueError
    return ts, expires_ms, bool(flags & _TOMBSTONE), node


def is_live(rec: Record | None, now_ms: int) -> bool:
    """True when a reader should see the record's value."""
    if rec is None or rec.tombstone:
        return False
    return rec.expires_ms == 0 or rec.expires_ms > now_ms


def is_live_raw(raw: bytes | None, now_ms: int) -> bool:
    """`is_live` of a packed record, from its header alone."""
    if raw is None:
        return False
    _, expires_ms, flags, _ = _HEADER.unpack_from(raw)
    return not flags & _TOMBSTONE and (expires_ms == 0 or expires_ms > now_ms)


def newer_raw(a: bytes, b: bytes) -> bool:
    """True when packed record `a` has a newer version than packed `b`
    (timestamp, then member id: UTF-8 byte order is code-point order)."""
    a_ts, _, _, a_len = _HEADER.unpack_from(a)
    b_ts, _, _, b_len = _HEADER.unpack_from(b)
    if a_ts != b_ts:
        return bool(a_ts > b_ts)
    return a[HEADER_SIZE : HEADER_SIZE + a_len] > b[HEADER_SIZE : HEADER_SIZE + b_len]
