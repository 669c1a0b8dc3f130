"""The stored record: value, version, tombstone and expiry, packed for LMDB.

A record is what one replica holds for one key. It is packed with a fixed
header so reads decode it without parsing JSON (the layout is defined once,
in `ringkv.packed`, which backups share):

    ts:u64  expires_ms:u64  flags:u8  node_len:u8  node:bytes  value:bytes

`expires_ms` is 0 when the key has no TTL. A tombstone (flag bit 0) has no
value; it remembers the delete's version so an older write replayed later
(hint, repair, anti-entropy) cannot resurrect the key. Pure: no I/O.
"""

from __future__ import annotations

from typing import NamedTuple

from ringkv.packed import HEADER, HEADER_SIZE, TOMBSTONE, pack
from ringkv.packed import fields as header
from ringkv.packed import is_live as is_live_raw
from ringkv.packed import newer as newer_raw
from ringkv.versions import Version

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "TOMBSTONE",
    "Record",
    "decode",
    "encode",
    "header",
    "is_live",
    "is_live_raw",
    "newer_raw",
    "pack",
]


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
    flags = TOMBSTONE if rec.tombstone else 0
    return HEADER.pack(rec.version.ts, rec.expires_ms, flags, len(node)) + node + rec.value


_new = tuple.__new__  # builds a named tuple without its Python-level __new__


def decode(raw: bytes) -> Record:
    """The record packed in `raw` (every read decodes one: kept lean)."""
    ts, expires_ms, flags, node_len = HEADER.unpack_from(raw)
    end = HEADER_SIZE + node_len
    version = _new(Version, (ts, raw[HEADER_SIZE:end].decode("utf-8")))
    return _new(Record, (version, raw[end:], flags & TOMBSTONE != 0, expires_ms))


def is_live(rec: Record | None, now_ms: int) -> bool:
    """True when a reader should see the record's value."""
    if rec is None or rec.tombstone:
        return False
    return rec.expires_ms == 0 or rec.expires_ms > now_ms
