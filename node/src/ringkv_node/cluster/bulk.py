"""The bulk write path: a whole batch as one call per replica.

A batch of single-key writes used to cost what its keys cost one by one: a
quorum future and a coalesced replica call per key, each settled by its own
callbacks (a 3-node cluster took about 16,000 keys/s through `put_many`,
1.5-2.5x single PUTs). Here the batch's records are grouped by owner: the
coordinator's own share is one storage operation (one transaction, one log
record), and each peer gets one `replicate` call over its peer link with
all of its records, which it applies in one transaction too. The batch
succeeds when every key has the acknowledgements its level needs; a peer
that fails is one hint write for all of its records.

Records travel packed (`records.pack`) and are never decoded on the way: the
same path serves `/v1/batch` (records stamped here) and restore's
`/admin/v1/apply` (records keeping the versions and expiry they were backed
up with, last-writer-wins on every replica).

The coordinator waits for every replica of the batch, not only the first W:
a bulk load then keeps all replicas in step (a quorum that ran ahead would
leave the slowest replica an ever longer queue, as the backlog note in
design §7.5 describes), and a peer that is down fails fast (its link is
marked down) and is hinted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ringkv_node.cluster.coordinator import NotEnoughReplicasError, unmet
from ringkv_node.cluster.peer import PeerError
from ringkv_node.model import records

if TYPE_CHECKING:
    from ringkv_node.cluster.coordinator import Coordinator, Group

__all__ = ["write_bulk"]


async def write_bulk(
    co: Coordinator, items: Sequence[tuple[bytes, bytes]], level: str, max_ts: int
) -> list[bytes | None]:
    """Write packed records last-writer-wins to their owners; per item, the newest
    previous record (packed) among the replicas that acknowledged.

    Raises NotEnoughReplicasError when some key's owners gave fewer
    acknowledgements than `level` needs (the others stay written, and the
    replicas that failed get hints, as for single writes).
    """
    if not items:
        return []
    ring = co.rings.ring
    node_id = co.node_id
    part_of = ring.partition_of
    by_part: dict[int, list[int]] = {}  # partition -> indexes of its items
    for i, (key, _) in enumerate(items):
        part = part_of(key)
        idxs = by_part.get(part)
        if idxs is None:
            by_part[part] = [i]
        else:
            idxs.append(i)
    plans: list[list[Group]] = []  # the owner groups of each partition written
    shares: dict[str, list[int]] = {}  # target -> indexes of the items it gets
    forwarded = 0
    for part, idxs in by_part.items():
        targets, groups = co.write_plan(ring.owners(part), items[idxs[0]][0], level)
        plans.append(groups)
        if node_id not in targets:
            forwarded += len(idxs)
        for target in targets:
            share = shares.get(target)
            if share is None:
                shares[target] = list(idxs)
            else:
                share += idxs
    co.coordinated += len(items)
    co.forwarded += forwarded
    sent: dict[str, asyncio.Future[Any]] = {}
    for target, idxs in shares.items():
        share_items = [items[i] for i in idxs]
        if target == node_id:
            sent[target] = co.kv.enqueue_raw(share_items, max_ts)
        else:
            sent[target] = asyncio.ensure_future(co.transport.replicate_raw(target, share_items))
    await asyncio.wait(list(sent.values()))
    acked: dict[str, list[bytes | None]] = {}
    failure: BaseException | None = None  # the local write's (a full disk): the batch's
    for target, fut in sent.items():
        error = fut.exception()  # every one retrieved
        if error is None:
            acked[target] = fut.result()
        elif isinstance(error, PeerError):
            hinted = [(items[i][0], records.decode(items[i][1])) for i in shares[target]]
            co._track(asyncio.ensure_future(co.hints.add(target, hinted)))
        else:
            failure = failure or error
    if failure is not None:
        raise failure
    for groups in plans:
        short = unmet(acked, groups)
        if short is not None:
            group, needed = short
            raise NotEnoughReplicasError(needed, len(acked.keys() & group), len(group), "write")
    previous: list[bytes | None] = [None] * len(items)
    newer = records.newer_raw
    for target, answers in acked.items():
        for i, prev in zip(shares[target], answers, strict=True):
            if prev is not None:
                cur = previous[i]
                if cur is None or newer(prev, cur):
                    previous[i] = prev
    return previous
