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

from ringkv_node.model import wire
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


def serve_now(kv: KV, name: str, doc: Any) -> Any:
    """The answer, or `Pending` for a write."""
    if name == "replicate":
        # Records stay packed from the wire to LMDB and back (no decode, no
        # encode): this runs for every replica of every write.
        try:
            items, max_ts = wire.packed_records(doc)
        except ValueError as exc:
            raise ValueError(f"replicate: {exc}") from None
        if not items:
            return []
        return Pending(kv.enqueue_raw(items, max_ts), _same)
    if name == "read":
        if not isinstance(doc, list) or not all(isinstance(k, bytes) for k in doc):
            raise ValueError("read: expected a list of keys")
        return kv.storage.get_raw_many(doc)
    if name == "scan":
        try:
            prefix = bytes(doc["prefix"])
            after = doc.get("start_after")
            limit = int(doc["limit"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError("scan: expected prefix, start_after, limit") from None
        if not 1 <= limit <= MAX_SCAN:
            raise ValueError("scan: limit out of range")
        entries, full = kv.scan_entries(prefix, None if after is None else bytes(after), limit)
        return {
            "entries": [[e.key, e.version.ts, e.version.node, e.live] for e in entries],
            "full": full,
        }
    if name == "digests":
        wanted = doc.get("partitions") if isinstance(doc, dict) else None
        if not isinstance(wanted, list):
            raise ValueError("digests: expected {partitions: [...]}")
        mine = kv.storage.bucket_digests()
        return {p: mine[p] for p in wanted if p in mine}
    if name == "bucket":
        try:
            part, after = int(doc["partition"]), bytes(doc["after"])
            bucket = None if doc.get("bucket") is None else int(doc["bucket"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("bucket: expected partition, bucket (or null), after") from None
        recs = kv.storage.partition_records(part, after=after, bucket=bucket, limit=PAGE)
        return {"records": wire.encode_records(recs), "more": len(recs) >= PAGE}
    raise ValueError(f"unknown peer call {name!r}")
