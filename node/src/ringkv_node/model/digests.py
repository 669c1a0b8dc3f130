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

import hashlib
import struct
from collections.abc import Iterable

import xxhash

from ringkv.versions import Version

__all__ = [
    "BUCKETS",
    "bucket_of",
    "bucket_of_hash",
    "combine",
    "digest_fingerprint",
    "node_hash",
    "record_digest",
    "record_digest_raw",
    "record_hash",
]

BUCKETS = 64
_hash = xxhash.xxh64_intdigest
_node_hashes: dict[bytes, int] = {}  # writer id (UTF-8) -> its hash


def bucket_of(key: bytes) -> int:
    """Low bits of the key's xxh64: independent of the partition (the top bits)."""
    return int(_hash(key)) & (BUCKETS - 1)


def bucket_of_hash(key_hash: int) -> int:
    """`bucket_of` a key whose xxh64 is already known (`ring.hashed_partitioner`)."""
    return key_hash & (BUCKETS - 1)


def record_digest(key: bytes, version: Version) -> int:
    """A 64-bit fingerprint of (key, version): the key hashed with the timestamp
    as seed, mixed with a hash of the writer id."""
    return record_digest_raw(key, version.ts, version.node.encode("utf-8"))


def record_digest_raw(key: bytes, ts: int, node: bytes) -> int:
    """`record_digest` of a version given as `ts` and the UTF-8 member id."""
    return int(_hash(key, ts)) ^ node_hash(node)


# `record_hash(key, ts)`: the key's half of `record_digest_raw` (a bulk write
# that knows its writer's `node_hash` XORs the two itself): xxh64 of the key
# with the timestamp as seed, the C function itself (no Python call a key).
record_hash = _hash


def node_hash(node: bytes) -> int:
    """The writer's half of `record_digest_raw` (UTF-8 member id), cached."""
    found = _node_hashes.get(node)
    if found is None:
        found = _node_hashes[node] = int(_hash(node, seed=3))
    return found


def combine(digests: Iterable[int]) -> int:
    out = 0
    for d in digests:
        out ^= d
    return out


def digest_fingerprint(buckets: list[int]) -> str:
    """A partition's bucket digests as one short string: equal for two replicas
    only when every bucket's digest is (so, but for a 64-bit collision in
    each differing bucket, when they hold the same keys at the same versions)."""
    return hashlib.sha256(struct.pack(f">{len(buckets)}Q", *buckets)).hexdigest()[:32]
