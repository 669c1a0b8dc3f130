"""What a replica answers to its peers, independent of how the bytes travel.

`serve(kv, name, doc)` takes a decoded internal request (`wire` documents)
and returns the decoded answer. The HTTP layer (`internal_api`), the peer
links (`peerlink`) and the fake network of the tests all call it, so they
exercise the same replica logic. `serve_now` is the same without a coroutine:
reads answer at once, a replica write answers `Pending` (its commit's future and
how to make the answer from it), so a peer link needs no task per message.
Malformed documents raise `ValueError`.
"""

from __future__ import annotations

from typing import Any

from ringkv.keys import STORABLE, check_keys
from ringkv_node.model import wire
from ringkv_node.model.digests import BUCKETS
from ringkv_node.model.pending import Pending, settle
from ringkv_node.replica.kv import KV
from ringkv_node.replica.paging import PAGE

__all__ = ["MAX_SCAN", "PEER_CALLS", "serve", "serve_now"]

MAX_SCAN = 10_001
PEER_CALLS = ("replicate", "read", "scan", "digests", "bucket")


async def serve(kv: KV, name: str, doc: Any) -> Any:
    return await settle(serve_now(kv, name, doc))


def _same(previous: list[bytes | None]) -> list[bytes | None]:
    return previous


def _get(doc: Any, field: str) -> Any:
    return doc.get(field) if isinstance(doc, dict) else None


_LONGEST = 511  # LMDB's longest key: a stored key is shorter (keys from before MAX_KEY_BYTES too)


def _is_key(value: Any, *, empty: bool = False) -> bool:
    """Bytes no longer than a stored key can be (`empty`: b"" too)."""
    return type(value) is bytes and (empty or bool(value)) and len(value) <= _LONGEST


def serve_now(kv: KV, name: str, doc: Any) -> Any:
    """The answer, or `Pending` for a write."""
    if name == "replicate":
        # Records stay packed from the wire to LMDB and back (no decode, no
        # encode): this runs for every replica of every write.
        try:
            items, max_ts = wire.packed_records(doc)
            # what any node may store (the sender checked its own limits)
            check_keys([key for key, _ in items], STORABLE)
        except ValueError as exc:  # also InvalidKeyError
            raise ValueError(f"replicate: {exc}") from None
        if not items:
            return []
        return Pending(kv.enqueue_raw(items, max_ts), _same)
    if name == "read":
        if not isinstance(doc, list) or not all(isinstance(k, bytes) for k in doc):
            raise ValueError("read: expected a list of keys")
        return kv.storage.get_raw_many(doc)
    if name == "scan":
        prefix, after, limit = _get(doc, "prefix"), _get(doc, "start_after"), _get(doc, "limit")
        if not (
            _is_key(prefix, empty=True)
            and (after is None or _is_key(after))
            and type(limit) is int
            and 1 <= limit <= MAX_SCAN
        ):
            raise ValueError(f"scan: expected prefix, start_after, limit 1-{MAX_SCAN}")
        entries, full = kv.scan_entries(prefix, after, limit)
        return {
            "entries": [[e.key, e.version.ts, e.version.node, e.live] for e in entries],
            "full": full,
        }
    if name == "digests":
        wanted = _get(doc, "partitions")
        if not isinstance(wanted, list) or not all(type(p) is int for p in wanted):
            raise ValueError("digests: expected {partitions: [int, ...]}")
        mine = kv.storage.bucket_digests()
        return {p: mine[p] for p in wanted if p in mine}
    if name == "bucket":
        part, after, bucket = _get(doc, "partition"), _get(doc, "after"), _get(doc, "bucket")
        if not (
            type(part) is int
            and 0 <= part < kv.storage.partitions
            and _is_key(after, empty=True)
            and (bucket is None or (type(bucket) is int and 0 <= bucket < BUCKETS))
        ):
            raise ValueError(
                f"bucket: expected partition 0-{kv.storage.partitions - 1}, "
                f"bucket 0-{BUCKETS - 1} (or null), after"
            )
        recs = kv.storage.partition_records(part, after=after, bucket=bucket, limit=PAGE)
        return {"records": wire.encode_records(recs), "more": len(recs) >= PAGE}
    raise ValueError(f"unknown peer call {name!r}")
