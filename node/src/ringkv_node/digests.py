"""Anti-entropy digests: an order-free fingerprint of each replica's data.

Each partition is split into `BUCKETS` buckets by a hash of the whole key. A
bucket's digest is the XOR of `record_digest(key, version)` over its records,
so a write updates it in O(1) (XOR out the old version, XOR in the new) and
two replicas holding the same keys at the same versions have equal digests
whatever order the writes arrived in. A partition's digest is the XOR of its
buckets: replicas compare partitions first, then the buckets of those that
differ, then exchange only the records of differing buckets (a two-level hash
tree). Pure: no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import xxhash

from ringkv.versions import Version

__all__ = ["BUCKETS", "bucket_of", "combine", "record_digest"]

BUCKETS = 64
_TS = struct.Struct(">Q")


def bucket_of(key: bytes) -> int:
    # low bits: independent of the partition, which uses the top bits
    return int(xxhash.xxh64_intdigest(key, seed=1)) & (BUCKETS - 1)


def record_digest(key: bytes, version: Version) -> int:
    return int(
        xxhash.xxh64_intdigest(key + b"\x00" + _TS.pack(version.ts) + version.node.encode(), seed=2)
    )


def combine(digests: Iterable[int]) -> int:
    out = 0
    for d in digests:
        out ^= d
    return out
