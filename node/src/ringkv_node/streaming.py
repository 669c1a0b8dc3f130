"""Rebalance streaming: a new owner copies a partition it gains, then catches up.

The copy reads the partition from a current owner page by page (one key
range, see storage) and applies each page last-writer-wins, so it is safe to
repeat after a crash. Writes made meanwhile already reach the new owner (the
coordinators write to old and new owners while a ring joins); the catch-up
pass compares the partition's digests with the source and reconciles the
buckets that differ, which covers writes that were in flight when the
joining ring was installed.
"""

from __future__ import annotations

from ringkv_node import wire
from ringkv_node.antientropy import AntiEntropy, differing
from ringkv_node.kv import KV
from ringkv_node.transport import Transport

__all__ = ["catch_up", "copy_partition"]

PAGE = 1000


async def copy_partition(kv: KV, transport: Transport, source: str, part: int) -> int:
    """Copy every record of `part` from `source`; return how many were applied."""
    after = b""
    copied = 0
    while True:
        doc = await transport.call(
            source, "bucket", {"partition": part, "bucket": None, "after": after}
        )
        items = wire.decode_records(doc["records"])
        if items:
            applied = await kv.apply_many(items)
            copied += sum(1 for a in applied if a.applied)
            after = items[-1][0]
        if not doc["more"] or not items:
            return copied


async def catch_up(ae: AntiEntropy, transport: Transport, source: str, part: int) -> int:
    """Reconcile the buckets of `part` that differ from `source`; return how many did."""
    doc = await transport.call(source, "digests", {"partitions": [part]})
    theirs = {int(p): list(d) for p, d in doc.items()}
    diff = differing(ae.kv.storage.bucket_digests(), theirs, {part})
    for _, bucket in diff:
        await ae.sync_bucket(source, part, bucket)
    return len(diff)
