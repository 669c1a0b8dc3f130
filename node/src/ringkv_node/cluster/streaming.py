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

from ringkv_node.cluster.antientropy import AntiEntropy, differing
from ringkv_node.cluster.peer import Transport
from ringkv_node.replica import KV, peer_pages

__all__ = ["catch_up", "copy_partition"]


async def copy_partition(kv: KV, transport: Transport, source: str, part: int) -> int:
    """Copy every record of `part` from `source`; return how many were applied."""
    copied = 0
    async for page in peer_pages(transport.call, source, part, None):
        applied = await kv.apply_many(page)
        copied += sum(1 for a in applied if a.applied)
    return copied


async def catch_up(ae: AntiEntropy, transport: Transport, source: str, part: int) -> int:
    """Reconcile the buckets of `part` that differ from `source`; return how many did."""
    doc = await transport.call(source, "digests", {"partitions": [part]})
    theirs = {int(p): list(d) for p, d in doc.items()}
    diff = differing(ae.kv.storage.bucket_digests(), theirs, {part})
    for _, bucket in diff:
        await ae.sync_bucket(source, part, bucket)
    return len(diff)
