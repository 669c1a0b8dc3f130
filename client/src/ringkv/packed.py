"""The packed record: how a node stores one key's record, and how backups keep it.

    ts:u64  expires_ms:u64  flags:u8  node_len:u8  node:bytes  value:bytes

big-endian; `ts` is the HLC timestamp of the version, `node` the writer's
member id (UTF-8), `expires_ms` the absolute expiry (0: none), flag bit 0 a
tombstone (no value). The node stores records in this form and sends them
to peers in it (design §7.4); a backup's parts hold them byte for byte, so
restore writes back exactly what was read, version and expiry included.
Defined once here, for the node (`ringkv_node.records`) and the backup
format. Pure: no I/O.
"""

from __future__ import annotations

import struct

__all__ = ["HEADER", "HEADER_SIZE", "TOMBSTONE", "fields", "is_live", "newer", "pack"]

HEADER = struct.Struct(">QQBB")
HEADER_SIZE = HEADER.size
TOMBSTONE = 0x01


def pack(ts: int, expires_ms: int, tombstone: bool, node: bytes, value: bytes) -> bytes:
    """A record packed from its fields (`node` as UTF-8)."""
    return HEADER.pack(ts, expires_ms, TOMBSTONE if tombstone else 0, len(node)) + node + value


def fields(raw: bytes) -> tuple[int, int, bool, bytes]:
    """`(ts, expires_ms, tombstone, node)` of a packed record, checked: raises
    ValueError when `raw` is not one (too short, member id not UTF-8)."""
    if len(raw) < HEADER_SIZE:
        raise ValueError("record shorter than its header")
    ts, expires_ms, flags, node_len = HEADER.unpack_from(raw)
    end = HEADER_SIZE + node_len
    if len(raw) < end:
        raise ValueError("record shorter than its member id")
    node = raw[HEADER_SIZE:end]
    node.decode("utf-8")  # UnicodeDecodeError is a ValueError
    return ts, expires_ms, bool(flags & TOMBSTONE), node


def is_live(raw: bytes | None, now_ms: int) -> bool:
    """True when a reader would see the record's value (not deleted, not expired)."""
    if raw is None:
        return False
    _, expires_ms, flags, _ = HEADER.unpack_from(raw)
    return not flags & TOMBSTONE and (expires_ms == 0 or expires_ms > now_ms)


def newer(a: bytes, b: bytes) -> bool:
    """True when record `a` has a newer version than `b`: timestamp, then member
    id (UTF-8 byte order is code-point order, as `Version` compares)."""
    a_ts, _, _, a_len = HEADER.unpack_from(a)
    b_ts, _, _, b_len = HEADER.unpack_from(b)
    if a_ts != b_ts:
        return bool(a_ts > b_ts)
    return a[HEADER_SIZE : HEADER_SIZE + a_len] > b[HEADER_SIZE : HEADER_SIZE + b_len]
