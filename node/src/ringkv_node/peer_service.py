"""What a replica answers to its peers, independent of how the bytes travel.

`serve(kv, name, doc)` takes a decoded internal request (`wire` documents)
and returns the decoded answer. The HTTP layer (`internal_api`), the peer
links (`peerlink`) and the fake network of the tests all call it, so they
exercise the same replica logic. `serve_now` is the same without a coroutine:
reads answer at once, a replica write answers `Later` (its commit's future and
how to make the answer from it), so a peer link needs no task per message.
Malformed documents raise `ValueError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NamedTuple

from ringkv_node import wire
from ringkv_node.kv import KV

__all__ = ["BUCKET_PAGE", "MAX_SCAN", "PEER_CALLS", "Later", "serve", "serve_now"]

MAX_SCAN = 10_001
BUCKET_PAGE = 1000
PEER_CALLS = ("replicate", "read", "scan", "digests", "bucket")


class Later(NamedTuple):
    """An answer that waits for `future`; `finish` makes it from the future's result."""

    future: asyncio.Future[Any]
    finish: Callable[[Any], Any]


async def serve(kv: KV, name: str, doc: Any) -> Any:
    answer = serve_now(kv, name, doc)
    if isinstance(answer, Later):
        return answer.finish(await answer.future)
    return answer


def _same(previous: list[bytes | None]) -> list[bytes | None]:
    return previous


def serve_now(kv: KV, name: str, doc: Any) -> Any:
    """The answer, or `Later` for a write."""
    if name == "replicate":
        # Records stay packed from the wire to LMDB and back (no decode, no
        # encode): this runs for every replica of every write.
        try:
            items, max_ts = wire.packed_records(doc)
        except ValueError as exc:
            raise ValueError(f"replicate: {exc}") from None
        if not items:
            return []
        return Later(kv.enqueue_raw(items, max_ts), _same)
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
        recs = kv.storage.partition_records(part, after=after, bucket=bucket, limit=BUCKET_PAGE)
        return {"records": wire.encode_records(recs), "more": len(recs) >= BUCKET_PAGE}
    raise ValueError(f"unknown peer call {name!r}")
