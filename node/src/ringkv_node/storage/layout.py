"""The key layout of the node's LMDB environment: every sub-database, drawn once.

    data    partition:u16 | key                 -> packed record (`model.records`)
    meta    name                                 -> b"hlc": u64 HLC high-water mark;
                                                    b"ring", b"pending-ring": JSON
    expiry  expires_ms:u64 | key                -> b""   (TTL index, for purges)
    tombs   ts:u64 | key                        -> b""   (tombstone index, for purges)
    hints   target (UTF-8) | 0x00 | ts:u64 | key -> packed record (hinted handoff)

Integers are big-endian, so LMDB's byte order is their order: one partition
of `data` is one key range (anti-entropy buckets, rebalance streaming,
backups read ranges), the two indexes are oldest first, and one target's
hints are one range in the order they were written. A write-ahead log
record names a sub-database by its index in `DBS`. Pure: no I/O.
"""

from __future__ import annotations

import struct

__all__ = [
    "DATA",
    "DBS",
    "EXPIRY",
    "HINTS",
    "HLC_KEY",
    "META",
    "PART",
    "TOMBS",
    "U64",
    "data_key",
    "hint_key",
    "hint_prefix",
    "hint_target",
    "index_key",
    "partition_of_data_key",
]

DBS = ("data", "meta", "expiry", "tombs", "hints")
DATA, META, EXPIRY, TOMBS, HINTS = range(len(DBS))

U64 = struct.Struct(">Q")  # index stamps, hint timestamps, the HLC mark
PART = struct.Struct(">H")  # the partition prefix of a data key
HLC_KEY = b"hlc"


def data_key(part: int, key: bytes) -> bytes:
    """Where `key` of partition `part` is stored in `data`."""
    return PART.pack(part) + key


def partition_of_data_key(pkey: bytes) -> int:
    return int(PART.unpack_from(pkey)[0])


def index_key(stamp: int, key: bytes) -> bytes:
    """An `expiry` (expires_ms) or `tombs` (ts) entry for `key`."""
    return U64.pack(stamp) + key


def hint_prefix(target: str) -> bytes:
    """Where `target`'s hints begin in `hints`."""
    return target.encode() + b"\x00"


def hint_key(target: str, ts: int, key: bytes) -> bytes:
    return hint_prefix(target) + U64.pack(ts) + key


def hint_target(hkey: bytes) -> str:
    return hkey.split(b"\x00", 1)[0].decode()
