"""The ring: how keys map to partitions and which members own each partition.

Client, node and operator must agree bit for bit on where a key lives, so the
math lives once, here (DESIGN §2). The module is pure (stdlib and xxhash only):

* `partition(key, Q)` -- xxh64 (seed 0) of the key, or of its Redis-Cluster hash
  tag `{...}`, keeping the top log2(Q) bits;
* `Ring` -- an immutable, validated owner table with JSON-ready `to_dict` and
  `from_dict`, and the hot-path lookup `owners_of_key` (one hash, one index);
* `initial_ring` / `rebalance` -- deterministic, balanced, zone-aware
  assignment that moves as few replicas as it can (see `ringkv._assign`);
* `moves` / `union_owners` -- what a joining phase streams and where it writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import xxhash

from ringkv._assign import assign

MAX_PARTITIONS = 65536
DEFAULT_PARTITIONS = 256
DEFAULT_REPLICATION_FACTOR = 3


_OPEN = ord("{")


def hash_tag(key: str | bytes) -> bytes:
    """The bytes that decide the partition: the hash tag if the key has one.

    For bytes without a tag this is the key object itself (callers may test
    `hash_tag(key) is key` to reuse a hash of the whole key).
    """
    data = key.encode("utf-8") if isinstance(key, str) else key
    if _OPEN not in data:  # an int: one memchr (a bytes needle costs several times more)
        return data
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            return data[start + 1 : end]
    return data


def _check_partitions(partitions: object) -> int:
    if (
        not isinstance(partitions, int)
        or isinstance(partitions, bool)
        or not 1 <= partitions <= MAX_PARTITIONS
        or partitions & (partitions - 1)
    ):
        raise ValueError(
            f"partitions must be a power of two from 1 to {MAX_PARTITIONS}, got {partitions!r}"
        )
    return partitions


def partitioner(partitions: int) -> Callable[[str | bytes], int]:
    """The partition function of `partitions` (a power of two): the top log2(Q)
    bits of the xxh64 of the key's hash tag (design §2). The one place the
    formula is written: `partition`, `Ring`, `hashed_partitioner` and the
    node's storage use it."""
    shift = 64 - (_check_partitions(partitions).bit_length() - 1)
    digest = xxhash.xxh64_intdigest

    def part(key: str | bytes) -> int:
        data = key.encode("utf-8") if isinstance(key, str) else key
        if _OPEN not in data:  # no tag: the whole key (the hot path, without a call)
            return digest(data) >> shift
        return digest(hash_tag(data)) >> shift

    return part


def hashed_partitioner(partitions: int) -> Callable[[bytes], tuple[int, int]]:
    """`key -> (partition, xxh64 of the whole key)`, with one hash for a key
    without a hash tag (its tag is the whole key): the node's storage needs
    both for every key it writes (the partition, and the digest bucket)."""
    part = partitioner(partitions)
    shift = 64 - (partitions.bit_length() - 1)
    digest = xxhash.xxh64_intdigest

    def locate(key: bytes) -> tuple[int, int]:
        h = digest(key)
        return (part(key) if _OPEN in key else h >> shift), h

    return locate


def partition(key: str | bytes, partitions: int = DEFAULT_PARTITIONS) -> int:
    """Partition of `key` among `partitions` (a power of two): top bits of xxh64."""
    return partitioner(partitions)(key)


@dataclass(frozen=True, slots=True)
class Member:
    """A storage node as the ring knows it: a stable id, how to reach it, its zone."""

    id: str
    url: str
    zone: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"member id must be a non-empty string, got {self.id!r}")
        for name in ("url", "zone"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"member {self.id!r}: {name} must be a string")

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "url": self.url, "zone": self.zone}

    @classmethod
    def from_dict(cls, data: object) -> Member:
        if not isinstance(data, Mapping):
            raise ValueError(f"member must be an object, got {type(data).__name__}")
        for name in ("id", "url"):
            if not isinstance(data.get(name), str):
                raise ValueError(f"member {name} must be a string, got {data.get(name)!r}")
        return cls(id=data["id"], url=data["url"], zone=data.get("zone", ""))


@dataclass(frozen=True, slots=True)
class Move:
    """One partition whose owners change: who gains it, who loses it, who to copy from."""

    partition: int
    gained_by: tuple[str, ...]
    lost_by: tuple[str, ...]
    sources: tuple[str, ...]


def _positive_int(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Ring:
    """An owner table at one epoch. Construction validates; instances never change.

    `members` is kept sorted by id; `owner_table[p]` lists the owners of
    partition p, the first being the preferred coordinator.
    """

    epoch: int
    partitions: int
    replication_factor: int
    members: tuple[Member, ...]
    owner_table: tuple[tuple[str, ...], ...]
    _part: Callable[[str | bytes], int] = field(init=False, repr=False, compare=False)
    _by_id: dict[str, Member] = field(init=False, repr=False, compare=False)
    _held: dict[str, frozenset[int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _positive_int("epoch", self.epoch, 0)
        q = _check_partitions(self.partitions)
        n = _positive_int("replication_factor", self.replication_factor, 1)
        for member in self.members:
            if not isinstance(member, Member):
                raise ValueError(f"members must be Member objects, got {member!r}")
        members = tuple(sorted(self.members, key=lambda m: m.id))
        by_id: dict[str, Member] = {}
        for member in members:
            if member.id in by_id:
                raise ValueError(f"duplicate member id {member.id!r}")
            by_id[member.id] = member
        if n > len(members):
            raise ValueError(f"replication_factor {n} exceeds the {len(members)} members")
        table = tuple(tuple(owners) for owners in self.owner_table)
        if len(table) != q:
            raise ValueError(f"owners has {len(table)} entries, expected one per partition ({q})")
        held: dict[str, set[int]] = {m: set() for m in by_id}
        for p, owners in enumerate(table):
            if len(owners) != n or len(set(owners)) != n:
                raise ValueError(f"partition {p} must have {n} distinct owners, got {owners!r}")
            for owner in owners:
                if owner not in by_id:
                    raise ValueError(f"partition {p} names unknown owner {owner!r}")
                held[owner].add(p)
        object.__setattr__(self, "members", members)
        object.__setattr__(self, "owner_table", table)
        object.__setattr__(self, "_part", partitioner(q))
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_held", {m: frozenset(ps) for m, ps in held.items()})

    # -- lookups (hot path first) ---------------------------------------------

    def owners_of_key(self, key: str | bytes) -> tuple[str, ...]:
        """Owners of the partition `key` maps to, preferred coordinator first."""
        return self.owner_table[self._part(key)]

    def partition_of(self, key: str | bytes) -> int:
        return self._part(key)

    def owners(self, partition: int) -> tuple[str, ...]:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} out of range 0..{self.partitions - 1}")
        return self.owner_table[partition]

    def member(self, member_id: str) -> Member:
        """The member with this id; KeyError if it is not in the ring."""
        return self._by_id[member_id]

    @property
    def member_ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.members)

    def partitions_of(self, member_id: str) -> frozenset[int]:
        """Partitions `member_id` owns (any replica position); empty if not a member."""
        return self._held.get(member_id, frozenset())

    # -- wire format ------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "members": [m.to_dict() for m in self.members],
            "owners": [list(owners) for owners in self.owner_table],
        }

    @classmethod
    def from_dict(cls, data: object) -> Ring:
        """Parse and validate a ring as `to_dict` (and GET /v1/ring) writes it."""
        if not isinstance(data, Mapping):
            raise ValueError(f"ring must be an object, got {type(data).__name__}")
        fields = ("epoch", "partitions", "replication_factor", "members", "owners")
        missing = [name for name in fields if name not in data]
        if missing:
            raise ValueError(f"ring is missing {', '.join(missing)}")
        members, owners = data["members"], data["owners"]
        if not isinstance(members, list):
            raise ValueError("ring members must be a list")
        if not isinstance(owners, list) or not all(isinstance(o, list) for o in owners):
            raise ValueError("ring owners must be a list of lists of member ids")
        for p, row in enumerate(owners):
            if not all(isinstance(owner, str) for owner in row):
                raise ValueError(f"partition {p} owners must be member id strings")
        return cls(
            epoch=data["epoch"],
            partitions=data["partitions"],
            replication_factor=data["replication_factor"],
            members=tuple(Member.from_dict(m) for m in members),
            owner_table=tuple(tuple(row) for row in owners),
        )


def _member_tuple(members: Iterable[Member]) -> tuple[Member, ...]:
    result = tuple(members)
    if not result:
        raise ValueError("a ring needs at least one member")
    seen: set[str] = set()
    for member in result:
        if not isinstance(member, Member):
            raise ValueError(f"members must be Member objects, got {member!r}")
        if member.id in seen:
            raise ValueError(f"duplicate member id {member.id!r}")
        seen.add(member.id)
    return result


def initial_ring(
    members: Iterable[Member],
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int = DEFAULT_REPLICATION_FACTOR,
) -> Ring:
    """The epoch-1 ring every node builds from the same member list (order irrelevant)."""
    roster = _member_tuple(members)
    q = _check_partitions(partitions)
    n = _positive_int("replication_factor", replication_factor, 1)
    if n > len(roster):
        raise ValueError(f"replication_factor {n} exceeds the {len(roster)} members")
    table = assign(q, n, {m.id: m.zone for m in roster})
    return Ring(1, q, n, roster, tuple(table))


def rebalance(old: Ring, members: Iterable[Member], replication_factor: int | None = None) -> Ring:
    """The next ring (epoch + 1) for a new member list, moving as few replicas as it can.

    Q never changes; N does only if `replication_factor` is given. With the same
    members and N the owner table comes back unchanged (urls and zones are
    taken from `members`, so a zone change may move replicas).
    """
    roster = _member_tuple(members)
    n = old.replication_factor if replication_factor is None else replication_factor
    n = _positive_int("replication_factor", n, 1)
    if n > len(roster):
        raise ValueError(f"replication_factor {n} exceeds the {len(roster)} members")
    table = assign(old.partitions, n, {m.id: m.zone for m in roster}, old.owner_table)
    return Ring(old.epoch + 1, old.partitions, n, roster, tuple(table))


def moves(old: Ring, new: Ring) -> list[Move]:
    """Partitions whose owner set changes from `old` to `new`, by partition.

    `sources` are the old owners still members of `new` (they hold the data
    until commit); if none is left, all old owners (a restore may still reach them).
    """
    if old.partitions != new.partitions:
        raise ValueError(f"partition count changed ({old.partitions} -> {new.partitions})")
    present = set(new.member_ids)
    result: list[Move] = []
    for p, (before, after) in enumerate(zip(old.owner_table, new.owner_table, strict=True)):
        if set(before) == set(after):
            continue
        sources = tuple(o for o in before if o in present) or before
        result.append(
            Move(
                partition=p,
                gained_by=tuple(o for o in after if o not in before),
                lost_by=tuple(o for o in before if o not in after),
                sources=sources,
            )
        )
    return result


def union_owners(old: Ring, new: Ring, partition: int) -> tuple[str, ...]:
    """Where a write goes during the joining phase: old owners, then the new ones."""
    before = old.owners(partition)
    return before + tuple(o for o in new.owners(partition) if o not in before)
