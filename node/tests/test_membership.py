"""Membership change in process: join, stream, commit, abort, and a restart while
streaming, over the fake network (milliseconds; `test_cluster.py` and
tests/cluster/test_rebalance.py do the same with real node processes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ringkv.rebalance import plan
from ringkv.ring import Member, Ring
from ringkv_node.cluster import RingConflictError, StaleEpochError

from fakenet import Clock, FakeNetwork, SimNode, add_node, build, restart


async def put(net: FakeNetwork, via: str, key: bytes, value: bytes) -> None:
    node = net.members[via]
    await node.coordinator.write(key, node.kv.stamp(value, None), "quorum")


async def get(net: FakeNetwork, via: str, key: bytes) -> bytes | None:
    node = net.members[via]
    rec = await node.coordinator.read(key, "quorum")
    return None if rec is None or rec.tombstone else rec.value


async def until(done: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not done():  # noqa: ASYNC110 - a condition of the node, not an event
            await asyncio.sleep(0.001)


async def streamed(node: SimNode) -> None:
    """Wait until `node` has streamed (and caught up) every partition it gains."""
    await until(lambda: not node.membership.streaming())
    progress = node.membership.progress()
    assert progress["in_sync"], progress


def grown(net: FakeNetwork, ring: Ring, new: str) -> Ring:
    return plan(ring, [*ring.members, Member(new, f"fake://{new}")])


async def joined(net: FakeNetwork, target: Ring) -> list[SimNode]:
    nodes = [net.members[m] for m in sorted(net.members)]
    for node in nodes:
        assert await node.membership.join(target) == "joining"
    return nodes


async def joining_n3(
    tmp: Path, net: FakeNetwork, ring: Ring, clock: Clock, keys: int
) -> tuple[SimNode, Ring, list[SimNode]]:
    """`keys` written, then n3 started and a ring with it joined everywhere:
    n3, the joining ring, and every node."""
    for i in range(keys):
        await put(net, "n0", b"k%d" % i, b"v%d" % i)
    n3 = add_node(net, tmp, "n3", ring, clock)
    target = grown(net, ring, "n3")
    return n3, target, await joined(net, target)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[FakeNetwork, Ring, Clock]]:
    net, ring, clock = build(tmp_path, size=3, partitions=16)
    yield net, ring, clock
    for node in net.members.values():
        node.close()


@pytest.mark.slow
async def test_join_stream_commit_moves_every_acknowledged_write(
    tmp_path: Path, cluster: tuple[FakeNetwork, Ring, Clock]
) -> None:
    net, ring, clock = cluster
    n3, target, nodes = await joining_n3(tmp_path, net, ring, clock, 300)
    assert n3.membership.progress()["partitions_to_stream"] > 0
    # the commit guard: n3 has not streamed what it gains
    with pytest.raises(RingConflictError, match="not finished streaming"):
        await n3.membership.commit(target.epoch)
    for i in range(300, 400):  # written while joining: to old and new owners
        await put(net, "n1", b"k%d" % i, b"v%d" % i)
    for node in nodes:
        await node.membership.stream(target.epoch)
    await streamed(n3)
    for node in nodes:
        assert await node.membership.commit(target.epoch) == "committed"
        assert node.rings.ring == target and node.rings.pending is None
    assert await n3.membership.commit(target.epoch) == "committed"  # idempotent
    me = "n3"
    for part in target.partitions_of(me):  # n3 holds what it owns, as its peers do
        ours = n3.kv.storage.bucket_digests().get(part)
        other = next(o for o in target.owners(part) if o != me)
        assert ours == net.members[other].kv.storage.bucket_digests().get(part)
    net.isolate("n0")  # reads from the new owners alone find every write
    for i in range(400):
        assert await get(net, "n3", b"k%d" % i) == b"v%d" % i
    net.heal()
    # the old owners drop what they no longer own (drop delay 0 here)
    dropped = {m: await net.members[m].membership.drop_due() for m in ("n0", "n1", "n2")}
    assert any(dropped.values())
    for member, parts in dropped.items():
        assert not set(parts) & target.partitions_of(member)


async def test_a_stale_or_second_joining_ring_is_refused(
    tmp_path: Path, cluster: tuple[FakeNetwork, Ring, Clock]
) -> None:
    net, ring, clock = cluster
    add_node(net, tmp_path, "n3", ring, clock)
    target = grown(net, ring, "n3")
    n0 = net.members["n0"].membership
    assert await n0.join(ring) == "committed"  # the current ring: nothing to do
    with pytest.raises(StaleEpochError):
        await n0.stream(target.epoch)  # nothing joining yet
    assert await n0.join(target) == "joining"
    assert await n0.join(target) == "joining"  # idempotent
    other = plan(ring, [*ring.members, Member("n4", "fake://n4")])
    with pytest.raises(RingConflictError, match="already joining"):
        await n0.join(other)


async def test_abort_keeps_the_old_ring_and_drops_what_was_streamed(
    tmp_path: Path, cluster: tuple[FakeNetwork, Ring, Clock]
) -> None:
    net, ring, clock = cluster
    n3, target, nodes = await joining_n3(tmp_path, net, ring, clock, 200)
    await n3.membership.stream(target.epoch)
    await streamed(n3)
    assert any(any(row) for row in n3.kv.storage.bucket_digests().values())
    for node in nodes:
        assert await node.membership.abort(target.epoch) == "aborted"
        assert node.rings.ring == ring and node.rings.pending is None
    assert await n3.membership.abort(target.epoch) == "aborted"  # idempotent
    with pytest.raises(StaleEpochError):
        await n3.membership.commit(target.epoch)
    assert sorted(await n3.membership.drop_due()) == sorted(target.partitions_of("n3"))
    assert not any(any(row) for row in n3.kv.storage.bucket_digests().values())
    for i in range(200):  # nothing was lost on the old owners
        assert await get(net, "n2", b"k%d" % i) == b"v%d" % i


@pytest.mark.slow
async def test_a_node_restarted_while_streaming_resumes_and_commits(
    tmp_path: Path, cluster: tuple[FakeNetwork, Ring, Clock]
) -> None:
    net, ring, clock = cluster
    n3, target, nodes = await joining_n3(tmp_path, net, ring, clock, 300)
    gained = n3.membership.gained()
    # stop n3 once it has streamed two partitions: a crash in the middle
    n3.transport.net.delay_s = 0.001
    await n3.membership.stream(target.epoch)
    await until(lambda: len(n3.membership.streamed) >= 2)
    done_before = set(n3.membership.streamed)
    assert done_before < set(gained)
    n3 = await restart(net, tmp_path, "n3", clock)
    assert n3.rings.pending == target  # the joining ring was kept on disk
    assert set(n3.membership.streamed) >= done_before  # and what it had streamed
    assert n3.membership.streaming()  # it was streaming: it goes on by itself
    await streamed(n3)
    for node in [*nodes[:3], n3]:
        assert await node.membership.commit(target.epoch) == "committed"
    net.isolate("n0")
    for i in range(300):
        assert await get(net, "n3", b"k%d" % i) == b"v%d" % i
