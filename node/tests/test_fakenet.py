"""Replication, hinted handoff, read repair and anti-entropy over a fake network."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ringkv.ring import Member, initial_ring
from ringkv_node.cluster import Coordinator, NotEnoughReplicasError, PeerError, RingState
from ringkv_node.storage import BACKLOG_LIMIT

from fakenet import FakeNetwork, HeldWriter, build, spy_calls


def local(net: FakeNetwork, node: str, key: bytes) -> bytes | None:
    rec = net.members[node].kv.get(key)
    return None if rec is None else rec.value


async def put(net: FakeNetwork, via: str, key: bytes, value: bytes, level: str = "quorum") -> None:
    node = net.members[via]
    await node.coordinator.write(key, node.kv.stamp(value, None), level)


async def drain(net: FakeNetwork) -> None:
    """Let every coordinator finish its background work (slow replicas, hints)."""
    for _ in range(3):  # finished work can start more: a failed write adds a hint
        for node in net.members.values():
            await node.coordinator.drain()
        await asyncio.sleep(0.01)


async def test_partitioned_replica_is_hinted_then_caught_up(net: FakeNetwork) -> None:
    net.isolate("n2")
    for i in range(50):
        await put(net, "n0", b"k%d" % i, b"v%d" % i)
    await drain(net)
    assert net.members["n0"].hints.backlog == {"n2": 50}
    assert local(net, "n2", b"k0") is None
    net.heal()
    delivered = await net.members["n0"].hints.replay("n2", net.members["n0"].transport)
    assert delivered == 50
    assert net.members["n0"].hints.backlog == {}
    assert all(local(net, "n2", b"k%d" % i) == b"v%d" % i for i in range(50))


async def test_hints_survive_a_failed_replay(net: FakeNetwork) -> None:
    net.isolate("n1")
    await put(net, "n0", b"a", b"1")
    await drain(net)
    with pytest.raises(PeerError):
        await net.members["n0"].hints.replay("n1", net.members["n0"].transport)
    assert net.members["n0"].hints.backlog == {"n1": 1}
    net.heal()
    assert await net.members["n0"].hints.replay("n1", net.members["n0"].transport) == 1


async def test_lost_acks_still_count_as_hints_and_replay_is_idempotent(net: FakeNetwork) -> None:
    net.drop_replies_from.add("n1")
    await put(net, "n0", b"k", b"v")  # n0 + n2 ack; n1 applied it but its reply was lost
    await drain(net)
    assert local(net, "n1", b"k") == b"v"
    assert net.members["n0"].hints.backlog == {"n1": 1}
    net.heal()
    await net.members["n0"].hints.replay("n1", net.members["n0"].transport)
    assert local(net, "n1", b"k") == b"v"


async def test_quorum_not_reached_says_how_many_answered(net: FakeNetwork) -> None:
    net.isolate("n0")
    with pytest.raises(NotEnoughReplicasError) as info:
        await put(net, "n0", b"k", b"v")
    assert (info.value.needed, info.value.answered) == (2, 1)
    await put(net, "n0", b"k2", b"v", level="one")  # one is enough
    with pytest.raises(NotEnoughReplicasError):
        await net.members["n0"].coordinator.read(b"k2", "quorum")


async def test_read_repair_fixes_a_stale_replica(net: FakeNetwork) -> None:
    net.isolate("n2")
    await put(net, "n0", b"k", b"new")
    await drain(net)
    net.members["n0"].hints.backlog.clear()  # as if the hints were lost
    net.heal()
    rec = await net.members["n2"].coordinator.read(b"k", "quorum")  # n2 asks itself + n0
    assert rec is not None and rec.value == b"new"
    await drain(net)
    assert local(net, "n2", b"k") == b"new"


async def test_anti_entropy_converges_after_lossy_writes(net: FakeNetwork) -> None:
    net.loss = 0.4
    acked: dict[bytes, bytes] = {}
    for i in range(300):
        key, value = b"k%03d" % i, b"v%d" % i
        try:
            await put(net, f"n{i % 3}", key, value, level="one")
        except NotEnoughReplicasError:
            continue
        acked[key] = value
    await drain(net)
    for node in net.members.values():
        node.hints.backlog.clear()  # rely on anti-entropy alone
    net.heal()
    first = await net.members["n0"].anti_entropy.run_round()
    assert first.buckets_differing > 0
    assert 0 < len(first.partitions_differing) <= first.buckets_differing
    assert net.members["n0"].anti_entropy.partitions_out_of_sync == len(first.partitions_differing)
    for _ in range(3):
        for node in net.members.values():
            await node.anti_entropy.run_round()
    digests = [n.kv.storage.bucket_digests() for n in net.members.values()]
    assert digests[0] == digests[1] == digests[2]
    for key, value in acked.items():
        assert {local(net, n, key) for n in net.members} == {value}
    assert net.members["n0"].anti_entropy.out_of_sync == 0
    assert net.members["n0"].anti_entropy.partitions_out_of_sync == 0


async def test_anti_entropy_propagates_deletes(net: FakeNetwork) -> None:
    await put(net, "n0", b"gone", b"v")
    net.isolate("n2")
    node = net.members["n0"]
    await node.coordinator.write(b"gone", node.kv.stamp(b"", None, tombstone=True), "quorum")
    await drain(net)
    node.hints.backlog.clear()
    net.heal()
    assert local(net, "n2", b"gone") == b"v"
    await net.members["n2"].anti_entropy.run_round()
    assert local(net, "n2", b"gone") is None


async def test_anti_entropy_leaves_a_write_that_lands_while_it_looks(net: FakeNetwork) -> None:
    """A bucket differing only because a write is in flight is not exchanged."""
    n0 = net.members["n0"]
    rec = n0.kv.stamp(b"v", None)
    await n0.kv.apply(b"inflight", rec)  # the other replicas' copies are on their way

    async def land(calls: list[str]) -> None:
        if calls == ["digests"]:  # ... and land
            for other in ("n1", "n2"):
                await net.members[other].kv.apply(b"inflight", rec)

    calls = spy_calls(n0.transport, land)
    result = await n0.anti_entropy.run_round()
    assert "bucket" not in calls  # nothing was fetched
    assert (result.pulled, result.pushed) == (0, 0)
    # a real difference is still found and repaired
    await n0.kv.apply(b"only-here", n0.kv.stamp(b"w", None))
    result = await n0.anti_entropy.run_round()
    assert result.pushed >= 1
    assert local(net, "n1", b"only-here") == b"w"


async def test_a_backlogged_coordinator_answers_once_its_own_copy_is_written(
    net: FakeNetwork,
) -> None:
    storage = net.members["n0"].kv.storage
    writer = HeldWriter(storage)
    try:
        # a short queue: the two remote replicas are the quorum, as usual
        await asyncio.wait_for(put(net, "n0", b"early", b"v"), 5)
        assert storage.backlog() == 1  # n0's own copy: applied, not yet durable
        fillers = [storage.enqueue(lambda wt: None) for _ in range(BACKLOG_LIMIT)]
        assert storage.backlogged()
        late = asyncio.ensure_future(put(net, "n0", b"late", b"w"))
        for _ in range(500):  # until both remote replicas have it (5 s at most)
            if local(net, "n1", b"late") == local(net, "n2", b"late") == b"w":
                break
            await asyncio.sleep(0.01)
        assert local(net, "n1", b"late") == local(net, "n2", b"late") == b"w"
        await asyncio.sleep(0.05)
        assert not late.done()  # the quorum has answered; n0's own copy has not
    finally:
        await writer.release()
    await asyncio.wait_for(late, 5)
    assert local(net, "n0", b"late") == b"w"
    await asyncio.gather(*fillers)
    assert not storage.backlogged()


async def test_anti_entropy_skips_a_round_while_its_writer_is_behind(net: FakeNetwork) -> None:
    n0 = net.members["n0"]
    await n0.kv.apply(b"only-here", n0.kv.stamp(b"w", None))
    sent = net.sent
    writer = HeldWriter(n0.kv.storage)
    try:
        fillers = [n0.kv.storage.enqueue(lambda wt: None) for _ in range(BACKLOG_LIMIT)]
        result = await n0.anti_entropy.run_round()
        assert result.deferred and result.busy
        assert net.sent == sent  # not one digest asked for
    finally:
        await writer.release()
    await asyncio.gather(*fillers)
    result = await n0.anti_entropy.run_round()
    assert not result.deferred
    assert result.pushed >= 1
    assert local(net, "n1", b"only-here") == b"w"


async def test_anti_entropy_leaves_buckets_still_changing_for_a_later_round(
    net: FakeNetwork,
) -> None:
    """A replica still applying writes: its bucket differs both times, but moved."""
    n0 = net.members["n0"]
    await n0.kv.apply(b"k", n0.kv.stamp(b"v1", None))

    async def still_landing(calls: list[str]) -> None:
        if calls[-1] == "digests" and calls.count("digests") % 2 == 0:  # the second look
            await n0.kv.apply(b"k", n0.kv.stamp(b"v%d" % len(calls), None))

    calls = spy_calls(n0.transport, still_landing)
    result = await n0.anti_entropy.run_round()
    assert "bucket" not in calls
    assert result.moving == 2 and result.busy  # the bucket, once per peer
    assert (result.pulled, result.pushed) == (0, 0)
    del n0.transport.call  # the real calls again
    result = await n0.anti_entropy.run_round()  # quiet now: repaired
    assert result.pushed == 2 and not result.busy
    assert local(net, "n1", b"k") == local(net, "n0", b"k")


async def test_a_node_still_on_the_old_ring_reads_what_a_committed_node_wrote(
    tmp_path: Path,
) -> None:
    """Nodes commit a joining ring one by one; reads in between must not go stale."""
    net, new_ring, _ = build(tmp_path / "four", size=4)  # the ring being committed
    try:
        old_ring = initial_ring(
            [Member(f"n{i}", f"fake://n{i}") for i in range(3)], new_ring.partitions, 3
        )
        key = next(
            k
            for k in (b"k%d" % i for i in range(1000))
            if set(new_ring.owners_of_key(k)) == {"n0", "n1", "n3"}  # n2 leaves, n3 joins
        )
        n0, n2 = net.members["n0"], net.members["n2"]
        committed = Coordinator("n0", n0.kv, n0.transport, n0.hints, RingState(new_ring))
        old_joining = RingState(old_ring)
        old_joining.pending = new_ring
        joining = Coordinator("n2", n2.kv, n2.transport, n2.hints, old_joining)
        net.partition("n0", "n1")  # the write reaches n0 and n3: a quorum of the new owners
        await committed.write(key, n0.kv.stamp(b"fresh", None), "quorum")
        net.partition("n2", "n0")  # and the old-ring reader cannot ask n0
        rec = await joining.read(key, "quorum")
        assert rec is not None
        assert rec.value == b"fresh"
        await committed.drain()
        await joining.drain()
    finally:
        for node in net.members.values():
            node.close()
