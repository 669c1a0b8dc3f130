"""The ring's public face: key hashing, the Ring type and its wire format, moves, speed.

Placement properties (balance, zones, movement) are property-tested in test_assign.py.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import xxhash

import ringkv
from ringkv.ring import (
    Member,
    Move,
    Ring,
    hashed_partitioner,
    initial_ring,
    moves,
    partition,
    rebalance,
    union_owners,
)


def members(count: int, zones: tuple[str, ...] = ("",)) -> list[Member]:
    return [Member(f"n{i}", f"http://n{i}:8080", zones[i % len(zones)]) for i in range(count)]


# -- partition(key) -----------------------------------------------------------


def test_partition_is_top_bits_of_xxh64_seed_0() -> None:
    # Pinned: every client and node must agree on these forever.
    assert xxhash.xxh64_intdigest(b"foo") == 3728699739546630719
    assert partition(b"foo") == 51
    assert partition(b"foo", 65536) == 13247
    assert partition(b"foo", 2) == 0
    assert partition(b"", 256) == 239
    for q in (1, 2, 256, 65536):
        expected = xxhash.xxh64_intdigest(b"some-key", seed=0) >> (64 - (q.bit_length() - 1))
        assert partition("some-key", q) == expected


def test_partition_of_str_is_partition_of_its_utf8() -> None:
    assert partition("héllo") == partition("héllo".encode()) == 59


def test_single_partition_takes_everything() -> None:
    assert {partition(f"k{i}", 1) for i in range(50)} == {0}


def test_hash_tag_decides_the_partition() -> None:
    assert partition("user:{42}:a") == partition("user:{42}:b") == partition("42")
    assert partition("{42}") == partition(b"42")
    # Only the first "{" and the next "}" count.
    assert partition("a{x}b{y}") == partition("x")
    assert partition("a{x{y}z") == partition("x{y")


@pytest.mark.parametrize("key", ["user:{}:a", "{", "}", "a}b{c", "nothing", "{}{x}"])
def test_keys_without_a_usable_tag_hash_whole(key: str) -> None:
    whole = xxhash.xxh64_intdigest(key.encode()) >> 56
    assert partition(key) == whole


@pytest.mark.parametrize("q", [1, 2, 256, 65536])
@pytest.mark.parametrize(
    "key", [b"foo", b"", b"user:{42}:a", b"{42}", b"a{x{y}z", b"{", b"user:{}:a", "é".encode()]
)
def test_hashed_partitioner_is_the_partition_and_the_whole_keys_hash(q: int, key: bytes) -> None:
    assert hashed_partitioner(q)(key) == (partition(key, q), xxhash.xxh64_intdigest(key))


@pytest.mark.parametrize("q", [0, 3, 100, 131072, -4, True, 2.0, "256"])
def test_partition_count_must_be_a_power_of_two(q: object) -> None:
    with pytest.raises(ValueError, match="power of two"):
        partition("k", q)  # type: ignore[arg-type]


def test_keys_spread_evenly() -> None:
    counts = Counter(partition(f"key-{i}", 16) for i in range(16000))
    assert len(counts) == 16
    assert max(counts.values()) < 1150
    assert min(counts.values()) > 850


# -- Member and Ring ------------------------------------------------------------


def test_member_round_trip_and_default_zone() -> None:
    m = Member("n0", "http://n0:8080")
    assert m.zone == ""
    assert Member.from_dict(m.to_dict()) == m
    assert Member.from_dict({"id": "n1", "url": "u"}) == Member("n1", "u", "")


@pytest.mark.parametrize(
    "data",
    [
        {"id": "", "url": "u"},
        {"url": "u"},
        {"id": 3, "url": "u"},
        {"id": "a"},
        {"id": "a", "url": "u", "zone": 1},
        [],
    ],
)
def test_member_rejects_bad_input(data: object) -> None:
    with pytest.raises(ValueError, match="member"):
        Member.from_dict(data)


def test_ring_lookups() -> None:
    ring = initial_ring(members(5), partitions=64, replication_factor=3)
    assert ring.epoch == 1
    assert ring.member_ids == ("n0", "n1", "n2", "n3", "n4")
    assert ring.member("n3") == Member("n3", "http://n3:8080")
    with pytest.raises(KeyError):
        ring.member("nope")
    for key in ("a", b"b", "user:{7}:x"):
        p = ring.partition_of(key)
        assert p == partition(key, 64)
        assert ring.owners_of_key(key) == ring.owners(p) == ring.owner_table[p]
    with pytest.raises(ValueError, match="out of range"):
        ring.owners(64)
    with pytest.raises(ValueError, match="out of range"):
        ring.owners(-1)
    for m in ring.member_ids:
        assert ring.partitions_of(m) == {p for p in range(64) if m in ring.owners(p)}
    assert ring.partitions_of("stranger") == frozenset()


def test_ring_round_trips_through_json() -> None:
    ring = initial_ring(members(4, ("a", "b")), partitions=16, replication_factor=2)
    data = json.loads(json.dumps(ring.to_dict()))
    assert set(data) == {"epoch", "partitions", "replication_factor", "members", "owners"}
    assert data["members"][0] == {"id": "n0", "url": "http://n0:8080", "zone": "a"}
    assert Ring.from_dict(data) == ring
    assert Ring.from_dict(data).owners_of_key("k") == ring.owners_of_key("k")


def test_ring_keeps_members_sorted_by_id() -> None:
    ring = initial_ring(members(3), partitions=4, replication_factor=1)
    data = ring.to_dict()
    data["members"].reverse()
    assert Ring.from_dict(data) == ring


def _good() -> dict[str, object]:
    return initial_ring(members(3), partitions=4, replication_factor=2).to_dict()


def _with(**changes: object) -> dict[str, object]:
    data = _good()
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("ring", "must be an object"),
        ({"epoch": 1}, "missing partitions, replication_factor, members, owners"),
        (_with(epoch="1"), "epoch must be an integer"),
        (_with(epoch=-1), "epoch must be an integer >= 0"),
        (_with(epoch=True), "epoch must be an integer"),
        (_with(partitions=3), "power of two"),
        (_with(partitions=4.0), "power of two"),
        (_with(replication_factor=0), "replication_factor must be an integer >= 1"),
        (_with(replication_factor=4), "replication_factor 4 exceeds the 3 members"),
        (_with(members={"id": "n0"}), "members must be a list"),
        (_with(members=[{"id": "n0", "url": "u"}] * 3), "duplicate member id 'n0'"),
        (_with(members=["n0"]), "member must be an object"),
        (_with(owners=[["n0", "n1"]] * 3), "owners has 3 entries, expected one per partition"),
        (_with(owners=[["n0", "n1"]] * 3 + [["n0", "zz"]]), "unknown owner 'zz'"),
        (_with(owners=[["n0", "n1"]] * 3 + [["n0", "n0"]]), "2 distinct owners"),
        (_with(owners=[["n0", "n1"]] * 3 + [["n0"]]), "2 distinct owners"),
        (_with(owners=[["n0", "n1"]] * 3 + [["n0", 1]]), "member id strings"),
        (_with(owners="n0"), "list of lists"),
    ],
)
def test_from_dict_rejects_bad_rings(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Ring.from_dict(data)


def test_ring_is_immutable_and_hashable() -> None:
    ring = initial_ring(members(3), partitions=4, replication_factor=2)
    with pytest.raises(AttributeError):
        ring.epoch = 2  # type: ignore[misc]
    assert {ring: 1}[Ring.from_dict(ring.to_dict())] == 1


# -- building rings: explicit examples ---------------------------------------------


def test_initial_ring_is_pinned() -> None:
    """Placement is part of the wire contract: a change here moves data in live clusters."""
    zoned = [Member("a", "http://a:8080", "z1"), Member("b", "http://b:8080", "z2")]
    zoned.append(Member("c", "http://c:8080", "z3"))
    assert initial_ring(zoned, 8, 2).owner_table == (
        ("c", "a"), ("b", "a"), ("a", "b"), ("c", "b"),
        ("a", "c"), ("b", "c"), ("b", "a"), ("c", "a"),
    )  # fmt: skip
    assert initial_ring(members(4), 8, 3).owner_table == (
        ("n1", "n3", "n0"), ("n2", "n3", "n1"), ("n0", "n2", "n1"), ("n3", "n0", "n2"),
        ("n3", "n1", "n0"), ("n2", "n0", "n3"), ("n1", "n3", "n2"), ("n0", "n2", "n1"),
    )  # fmt: skip


def test_member_order_does_not_matter() -> None:
    people = members(7, ("a", "b", "c"))
    ring = initial_ring(people, 64, 3)
    for seed in range(3):
        random.Random(seed).shuffle(people)
        assert initial_ring(people, 64, 3) == ring


_PLACE = """
import random
from ringkv.ring import Member, initial_ring, rebalance
rng = random.Random(7)
people = [Member(f"m{i}", "u", rng.choice("abcd")) for i in range(30)]
ring = rebalance(initial_ring(people, 256, 3), people[:25] + [Member("x", "u", "e")])
print(rebalance(ring, ring.members, 4).owner_table)
"""


def test_placement_ignores_the_hash_seed() -> None:
    """No str hash() or set order leaks in: processes with other seeds agree."""
    src = str(Path(ringkv.__file__).resolve().parent.parent)
    outputs = set()
    for seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": src}
        run = subprocess.run(
            [sys.executable, "-c", _PLACE], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(run.stdout)
    assert len(outputs) == 1


def test_adding_a_member_moves_only_what_it_takes() -> None:
    ring = initial_ring(members(4), 8, 3)
    bigger = rebalance(ring, members(5))
    assert bigger.epoch == 2
    assert moves(ring, bigger) == [
        Move(0, gained_by=("n4",), lost_by=("n0",), sources=("n1", "n3", "n0")),
        Move(1, gained_by=("n4",), lost_by=("n1",), sources=("n2", "n3", "n1")),
        Move(3, gained_by=("n4",), lost_by=("n2",), sources=("n3", "n0", "n2")),
        Move(5, gained_by=("n4",), lost_by=("n3",), sources=("n2", "n0", "n3")),
    ]
    # Survivors keep their order (the preferred coordinator stays); newcomers go last.
    assert bigger.owners(0) == ("n1", "n3", "n4")
    assert union_owners(ring, bigger, 0) == ("n1", "n3", "n0", "n4")
    assert union_owners(ring, bigger, 2) == ring.owners(2)


def test_decommission_sources_and_lost_owners() -> None:
    ring = initial_ring(members(4), 8, 3)
    smaller = rebalance(ring, members(3))
    changed = moves(ring, smaller)
    assert [m.partition for m in changed] == sorted(ring.partitions_of("n3"))
    for move in changed:
        assert move.lost_by == ("n3",)
        assert len(move.gained_by) == 1
        assert "n3" not in move.sources  # n3 leaves the member list: not a source
        assert set(move.sources) == set(ring.owners(move.partition)) - {"n3"}


def test_sources_fall_back_to_all_old_owners() -> None:
    ring = initial_ring(members(2), 4, 2)
    fresh = rebalance(ring, [Member("x", "u"), Member("y", "u")])
    for move in moves(ring, fresh):
        assert move.sources == ring.owners(move.partition)
        assert move.lost_by == ring.owners(move.partition)
        assert set(move.gained_by) == {"x", "y"}
        assert union_owners(ring, fresh, move.partition) == ring.owners(move.partition) + (
            fresh.owners(move.partition)
        )


def test_moves_needs_the_same_partition_count() -> None:
    with pytest.raises(ValueError, match="partition count changed"):
        moves(initial_ring(members(3), 4, 1), initial_ring(members(3), 8, 1))


def test_same_members_same_owners() -> None:
    ring = initial_ring(members(6, ("a", "b")), 128, 3)
    again = rebalance(ring, reversed(members(6, ("a", "b"))))
    assert again.epoch == 2
    assert again.owner_table == ring.owner_table
    assert moves(ring, again) == []
    moved_url = [Member(m.id, m.url + "/v2", m.zone) for m in ring.members]
    assert rebalance(ring, moved_url).owner_table == ring.owner_table
    assert rebalance(ring, moved_url).member("n0").url == "http://n0:8080/v2"


def test_replication_factor_can_change() -> None:
    ring = initial_ring(members(5), 32, 2)
    more = rebalance(ring, members(5), replication_factor=3)
    assert more.replication_factor == 3
    assert all(more.owners(p)[:2] == ring.owners(p) for p in range(32))
    fewer = rebalance(more, members(5), replication_factor=1)
    assert all(fewer.owners(p) == more.owners(p)[:1] for p in range(32))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: initial_ring([], 8, 1), "at least one member"),
        (lambda: initial_ring(members(2), 8, 3), "replication_factor 3 exceeds the 2 members"),
        (lambda: initial_ring(members(2), 8, 0), "replication_factor must be"),
        (lambda: initial_ring(members(2), 12, 1), "power of two"),
        (lambda: initial_ring(members(2) * 2, 8, 1), "duplicate member id 'n0'"),
        (lambda: initial_ring(["n0"], 8, 1), "Member objects"),  # type: ignore[list-item]
        (lambda: rebalance(initial_ring(members(3), 8, 3), members(2)), "exceeds the 2"),
        (lambda: rebalance(initial_ring(members(3), 8, 3), members(3), 4), "exceeds the 3"),
    ],
)
def test_bad_assignment_requests(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


# -- speed ----------------------------------------------------------------------


def _timed(build: object) -> tuple[Ring, float]:
    start = time.perf_counter()
    ring = build()  # type: ignore[operator]
    return ring, time.perf_counter() - start


def test_building_is_fast() -> None:
    _, seconds = _timed(lambda: initial_ring(members(100), 256, 3))
    assert seconds < 0.1
    ring, seconds = _timed(lambda: initial_ring(members(20, ("a", "b", "c")), 4096, 3))
    assert seconds < 1.0
    _, seconds = _timed(lambda: rebalance(ring, members(21, ("a", "b", "c"))))
    assert seconds < 1.0


def test_owner_lookup_is_cheap() -> None:
    ring = initial_ring(members(10), 256, 3)
    keys = [f"user:{i}" for i in range(20000)]
    start = time.perf_counter()
    for key in keys:
        ring.owners_of_key(key)
    assert (time.perf_counter() - start) / len(keys) < 20e-6
