"""The pure decisions of membership change, anti-entropy and checkpoints, as tables."""

from __future__ import annotations

import dataclasses

import pytest

from ringkv.rebalance import plan
from ringkv.ring import Member, initial_ring
from ringkv.versions import Version
from ringkv_node.cluster import transitions as tr
from ringkv_node.cluster.antientropy import exchange
from ringkv_node.model import Record
from ringkv_node.storage.checkpointer import Rule, checkpoint_due

RING = initial_ring([Member(f"n{i}", f"fake://n{i}") for i in range(3)], 16, 3)
NEXT = plan(RING, [*RING.members, Member("n3", "fake://n3")])
AFTER = plan(NEXT, [*NEXT.members, Member("n4", "fake://n4")])


def test_join() -> None:
    assert tr.check_join(RING, None, NEXT) is None  # install it
    assert tr.check_join(RING, NEXT, NEXT) == "joining"  # again: nothing to do
    assert tr.check_join(RING, None, RING) == "committed"  # the ring itself
    with pytest.raises(tr.StaleEpochError):
        tr.check_join(NEXT, None, RING)
    with pytest.raises(tr.RingConflictError, match="already joining"):
        tr.check_join(RING, NEXT, plan(RING, [*RING.members, Member("n9", "fake://n9")]))
    with pytest.raises(tr.RingConflictError, match="must have epoch 2"):
        tr.check_join(RING, None, AFTER)
    other_q = initial_ring(list(RING.members), 32, 3)
    with pytest.raises(tr.RingConflictError, match="partition count"):
        tr.check_join(RING, None, other_q)


def test_commit_guard() -> None:
    gained = tr.gained(RING, NEXT, "n3")
    assert gained == sorted(NEXT.partitions_of("n3"))
    assert tr.gained(RING, None, "n3") == []
    with pytest.raises(tr.RingConflictError, match="not finished streaming"):
        tr.check_commit(RING, NEXT, NEXT.epoch, gained[:-1], "n3")
    assert tr.check_commit(RING, NEXT, NEXT.epoch, gained, "n3") == NEXT
    assert tr.check_commit(RING, NEXT, NEXT.epoch, [], "n0") == NEXT  # gains nothing
    assert tr.check_commit(NEXT, None, NEXT.epoch, [], "n3") is None  # done already
    with pytest.raises(tr.StaleEpochError, match="joining: 2"):
        tr.check_commit(RING, NEXT, 3, gained, "n3")


def test_progress() -> None:
    gained = tr.gained(RING, NEXT, "n3")
    doc = tr.progress("n3", RING, NEXT, gained[:1], True, {gained[1]: "down"})
    assert doc["partitions_to_stream"] == len(gained) and doc["partitions_streamed"] == 1
    assert not doc["in_sync"] and doc["errors"] == {str(gained[1]): "down"}
    assert tr.progress("n3", RING, NEXT, gained, False, {})["in_sync"]
    assert not tr.progress("n3", RING, None, [], False, {})["in_sync"]


@pytest.mark.parametrize(
    ("attempt", "down", "order"),
    [
        (0, set(), ["a", "b", "c"]),
        (1, set(), ["b", "c", "a"]),
        (0, {"a"}, ["b", "c"]),
        (0, {"a", "b", "c"}, ["a", "b", "c"]),  # all down: try them all anyway
    ],
)
def test_stream_order(attempt: int, down: set[str], order: list[str]) -> None:
    assert tr.stream_order(["a", "b", "c"], attempt, down.__contains__) == order


@pytest.mark.parametrize(
    ("reconciled", "owners", "needed", "done"),
    [(2, 2, 2, True), (1, 2, 2, False), (1, 1, 2, True), (0, 0, 2, False), (3, 3, 2, True)],
)
def test_stream_done(reconciled: int, owners: int, needed: int, done: bool) -> None:
    assert tr.stream_done(reconciled, owners, needed) is done


def test_unowned_and_drops() -> None:
    digests = {p: [1] for p in range(16)} | {5: [0]}
    unowned = tr.unowned_with_data(NEXT, None, "n3", digests)
    assert set(unowned) == set(range(16)) - NEXT.partitions_of("n3") - {5}
    assert tr.unowned_with_data(RING, NEXT, "n3", {}) == []
    since: dict[int, float] = {1: 0.0, 2: 5.0}
    assert tr.drops_due({1, 2, 3}, since, now=10.0, delay_s=6.0) == [1]
    assert since == {1: 0.0, 2: 5.0, 3: 10.0}
    assert tr.drops_due({3}, since, now=20.0, delay_s=6.0) == [3]
    assert since == {3: 10.0}  # owned again: forgotten


def test_install_from_gossip() -> None:
    assert tr.check_install(RING, NEXT)
    assert not tr.check_install(NEXT, RING)
    other_q = dataclasses.replace(initial_ring(list(RING.members), 32, 3), epoch=2)
    with pytest.raises(tr.RingConflictError, match="partition count"):
        tr.check_install(RING, other_q)


def rec(ts: int, tombstone: bool = False) -> Record:
    return Record(Version(ts, "n"), b"" if tombstone else b"v", tombstone)


def test_exchange_pulls_and_pushes_the_newer_side() -> None:
    mine = {b"a": rec(2), b"b": rec(1), b"c": rec(5), b"old": rec(1, tombstone=True)}
    theirs = {b"a": rec(1), b"b": rec(3), b"d": rec(4), b"gone": rec(1, tombstone=True)}
    forgotten = {b"old", b"gone"}
    pull, push = exchange(mine, theirs, lambda r: r.tombstone and r.version.ts == 1)
    assert dict(pull) == {b"b": rec(3), b"d": rec(4)}
    assert dict(push) == {b"a": rec(2), b"c": rec(5)}
    assert not forgotten & {k for k, _ in pull + push}


@pytest.mark.parametrize(
    ("since", "log", "grown", "due"),
    [(0.5, 0, 0, False), (1.0, 0, 0, True), (0.1, 64 << 20, 0, True), (0.1, 0, 32, True)],
)
def test_checkpoint_due(since: float, log: int, grown: int, due: bool) -> None:
    rule = Rule(interval_s=1.0, log_bytes=64 << 20, growth_share=1 / 32)
    assert (
        checkpoint_due(rule, since_last_s=since, log_bytes=log, grown_bytes=grown, map_size=1024)
        is due
    )
