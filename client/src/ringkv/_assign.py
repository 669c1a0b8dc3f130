"""Balanced, zone-aware, sticky assignment of partition replicas to members.

The one hard algorithm behind the ring (DESIGN §2): from the members (id ->
zone), Q, N and optionally the previous owner table, decide the N owners of
every partition. Pure and deterministic: members are sorted and ties broken
with xxh64 (never `hash()` or set order), so every client, node and operator
computes the same table on any machine. Guarantees (tests/test_assign.py):

* Zones first. With k the smallest level such that sum(min(size_z, k)) >= N,
  every partition holds min(size_z, k - 1) or min(size_z, k) replicas in zone z:
  N distinct zones when there are at least N zones, else the most even spread.
  A zone smaller than k holds every partition on all its members.
* Balance next. Zone totals are water-filled so loads are as even as the zone
  bounds allow; within a zone they differ by at most one; with no bound in the
  way every member owns floor or ceil of Q*N/M replicas.
* Stickiness. Surviving owners stay unless over their new quota or a zone
  bound; drops are spread so a partition loses as few owners as possible at
  once; open slots go to members still owed replicas, a previous owner of that
  partition first. Unchanged members give back the same table.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from fractions import Fraction

import xxhash

_LEVEL_SEED = 1 << 40  # seeds the per-quota-level tie-break between members
_ZONE_SEED = 1 << 48  # seeds the per-partition tie-break between zones


def _mix(text: str, seed: int) -> int:
    """A stable pseudo-random tie-break for (text, seed)."""
    return xxhash.xxh64_intdigest(text.encode("utf-8"), seed)


def zone_level(sizes: Sequence[int], replicas: int) -> int:
    """Smallest k with sum(min(size, k)) >= replicas: the per-zone replica cap."""
    level = 1
    while sum(min(size, level) for size in sizes) < replicas:
        level += 1
    return level


def _water_level(sizes: Sequence[int], low: int, high: int, supply: int) -> Fraction:
    """The per-member load x with sum(clamp(size * x, low, high)) == supply."""

    def total(x: Fraction) -> Fraction:
        return sum(
            (min(max(size * x, Fraction(low)), Fraction(high)) for size in sizes), Fraction(0)
        )

    points = sorted({Fraction(bound, size) for size in sizes for bound in (low, high)})
    previous = Fraction(0)
    for point in points:
        value = total(point)
        if value >= supply:
            before = total(previous)
            if value == before:
                return point
            return previous + (point - previous) * (supply - before) / (value - before)
        previous = point
    raise RuntimeError("ring assignment: zone capacity below demand")  # excluded by N <= M


class _Plan:
    """Mutable working state of one assignment; `run()` returns the table."""

    def __init__(
        self,
        partitions: int,
        replicas: int,
        zones: Mapping[str, str],
        previous: Sequence[Sequence[str]] | None,
    ) -> None:
        self.q = partitions
        self.n = replicas
        self.zone_of = dict(zones)
        by_zone: dict[str, list[str]] = {}
        for member in sorted(zones):
            by_zone.setdefault(zones[member], []).append(member)
        self.by_zone = dict(sorted(by_zone.items()))
        sizes = {zone: len(members) for zone, members in self.by_zone.items()}
        self.k = zone_level(list(sizes.values()), replicas)
        self.flex = [zone for zone, size in sizes.items() if size >= self.k]
        fixed = sum(size for size in sizes.values() if size < self.k)
        self.extras = replicas - fixed - (self.k - 1) * len(self.flex)  # zones at k per partition
        self.upper = {zone: min(size, self.k) for zone, size in sizes.items()}
        old = previous if previous is not None else [()] * partitions
        self.prev = [tuple(dict.fromkeys(m for m in owners if m in zones)) for owners in old]
        # Fit each partition to N and the zone bounds (they may have changed): a dry run
        # dropping late owners decides quota ties, the real one also spares members
        # already down to their quota. Then quota ties favour what is really kept.
        shaped = [self._trim(list(owners), balance=False) for owners in self.prev]
        self.load = Counter(m for owners in shaped for m in owners)
        self.quota, self.cap = self._quotas(sizes, fixed)
        self.load = Counter(m for owners in self.prev for m in owners)
        self.kept = [self._trim(list(owners), balance=True) for owners in self.prev]
        self.quota, self.cap = self._quotas(sizes, fixed)
        self.at_k = Counter(z for p in range(partitions) for z in self.flex if self._at_k(p, z))

    # -- quotas ---------------------------------------------------------------

    def _quotas(
        self, sizes: Mapping[str, int], fixed: int
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Replica slots owed to each member, and partitions at level k per flexible zone."""
        q, k = self.q, self.k
        totals = {zone: q * size for zone, size in sizes.items() if size < k}
        supply = q * (self.n - fixed)
        low, high = q * (k - 1), q * k
        level = _water_level([sizes[z] for z in self.flex], low, high, supply)
        ideal = {z: min(max(sizes[z] * level, Fraction(low)), Fraction(high)) for z in self.flex}
        floors = {z: int(ideal[z]) for z in self.flex}
        zone_load = Counter(self.zone_of[m] for m in self.load.elements())

        def zone_rank(z: str) -> tuple[Fraction, int, str]:
            return (-(ideal[z] - floors[z]), -(zone_load[z] - floors[z]), z)

        ranked = sorted((z for z in self.flex if ideal[z] != floors[z]), key=zone_rank)
        leftover = supply - sum(floors.values())
        totals.update(floors)
        for zone in ranked[:leftover]:
            totals[zone] += 1
        quota: dict[str, int] = {}
        for zone, members in self.by_zone.items():
            base, rest = divmod(totals[zone], len(members))
            ordered = sorted(members, key=lambda m: (-self.load[m], m))
            for index, member in enumerate(ordered):
                quota[member] = base + (1 if index < rest else 0)
        return quota, {z: totals[z] - low for z in self.flex}

    # -- helpers --------------------------------------------------------------

    def _at_k(self, p: int, zone: str) -> bool:
        return sum(1 for m in self.kept[p] if self.zone_of[m] == zone) == self.k

    def _excess(self, member: str) -> int:
        return self.load[member] - self.quota[member]

    def _drop_key(self, p: int, member: str) -> tuple[int, int, int, int]:
        """Higher drops first: over quota, crowded partition, late in order, then scrambled."""
        owners = self.kept[p]
        return (self._excess(member), len(owners), owners.index(member), _mix(member, p))

    def _drop(self, p: int, member: str) -> None:
        zone = self.zone_of[member]
        if zone in self.cap and self._at_k(p, zone):
            self.at_k[zone] -= 1
        self.kept[p].remove(member)
        self.load[member] -= 1

    # -- keep phase -----------------------------------------------------------

    def _trim(self, owners: list[str], balance: bool) -> list[str]:
        """Drop owners of one partition until it fits: late ones, over-quota ones first."""
        while victims := self._violators(owners):
            victim = max(victims, key=lambda m: (balance and self._excess(m) > 0, owners.index(m)))
            owners.remove(victim)
            if balance:
                self.load[victim] -= 1
        return owners

    def _violators(self, owners: list[str]) -> list[str]:
        """Owners of one partition that break N or a zone bound (empty if none)."""
        if len(owners) > self.n:
            return owners
        counts = Counter(self.zone_of[m] for m in owners)
        crowded = [m for m in owners if counts[self.zone_of[m]] > self.upper[self.zone_of[m]]]
        if crowded:
            return crowded
        full = [z for z in self.flex if counts[z] == self.k]
        if len(full) > self.extras:
            return [m for m in owners if self.zone_of[m] in full]
        return []

    def _keep(self) -> None:
        held: dict[str, list[int]] = {}
        for p, owners in enumerate(self.kept):
            for member in owners:
                held.setdefault(member, []).append(p)
        for member in sorted(held, key=lambda m: (-self._excess(m), m)):
            if self._excess(member) <= 0:
                break
            self._shed(member, held[member])
        for zone in self.flex:
            pairs = [
                (p, m)
                for p in range(self.q)
                if self._at_k(p, zone)
                for m in self.kept[p]
                if self.zone_of[m] == zone
            ]
            pairs.sort(key=lambda pm: (self._room(pm[0], zone), self._drop_key(*pm)), reverse=True)
            for p, member in pairs:
                if self.at_k[zone] <= self.cap[zone]:
                    break
                if self._at_k(p, zone):
                    self._drop(p, member)

    def _room(self, p: int, zone: str) -> bool:
        """Would p, losing its k-th replica in `zone`, make room for a zone that needs more?"""
        return any(
            z != zone and self.at_k[z] < self.cap[z] and not self._at_k(p, z) for z in self.flex
        )

    def _shed(self, member: str, held: list[int]) -> None:
        """Drop `member` to its quota, first where its zone holds more extras than it may."""
        excess = self._excess(member)
        zone = self.zone_of[member]
        spare = self.at_k[zone] - self.cap[zone] if zone in self.cap else 0
        first = [p for p in held if spare > 0 and self._at_k(p, zone)]
        first.sort(key=lambda p: (self._room(p, zone), self._drop_key(p, member)), reverse=True)
        first = first[: min(spare, excess)]
        rest = sorted(set(held).difference(first), key=lambda p: self._drop_key(p, member))
        for p in first + rest[::-1][: excess - len(first)]:
            self._drop(p, member)

    # -- zone phase: which flexible zones hold k replicas of each partition -----

    def _zones(self) -> list[set[str]]:
        chosen = [{z for z in self.flex if self._at_k(p, z)} for p in range(self.q)]
        used = Counter(z for zones in chosen for z in zones)
        for p in range(self.q):
            while len(chosen[p]) < self.extras:
                options = [z for z in self.flex if z not in chosen[p] and used[z] < self.cap[z]]
                if options:
                    zone = max(
                        options, key=lambda z: (self.cap[z] - used[z], _mix(z, _ZONE_SEED + p))
                    )
                    chosen[p].add(zone)
                    used[zone] += 1
                elif not any(self._augment(p, chosen, used, forced) for forced in (False, True)):
                    raise RuntimeError("ring assignment: no zone placement")  # flow theory excludes
        return chosen

    def _augment(self, p: int, chosen: list[set[str]], used: Counter[str], forced: bool) -> bool:
        """Shift one zone extra along a shortest chain of partitions so p gets one more.

        Without `forced`, only extras no kept owner depends on are shifted (free);
        with it, a kept owner may be dropped to make room (one more move).
        """
        parent: dict[str, tuple[str, int] | None] = {
            z: None for z in self.flex if z not in chosen[p]
        }
        queue = deque(parent)
        while queue:
            zone = queue.popleft()
            if used[zone] < self.cap[zone]:
                used[zone] += 1
                while (step := parent[zone]) is not None:
                    before, other = step
                    chosen[other].discard(before)
                    chosen[other].add(zone)
                    if self._at_k(other, before):
                        owners = [m for m in self.kept[other] if self.zone_of[m] == before]
                        self._drop(other, max(owners, key=lambda m: self._drop_key(other, m)))
                    zone = before
                chosen[p].add(zone)
                return True
            for other in range(self.q):
                if zone not in chosen[other] or (not forced and self._at_k(other, zone)):
                    continue
                for nxt in self.flex:
                    if nxt not in chosen[other] and nxt not in parent:
                        parent[nxt] = (zone, other)
                        queue.append(nxt)
        return False

    def run(self) -> list[tuple[str, ...]]:
        self._keep()
        chosen = self._zones()
        owners = [set(kept) for kept in self.kept]
        for zone, members in self.by_zone.items():
            _ZoneFill(self, zone, members, owners).run(chosen)
        survivors = [[m for m in self.prev[p] if m in owners[p]] for p in range(self.q)]
        firsts = Counter(kept[0] for kept in survivors if kept)
        table: list[tuple[str, ...]] = []
        for p in range(self.q):
            fresh = sorted(
                owners[p].difference(survivors[p]), key=lambda m: (firsts[m], _mix(m, p))
            )
            if not survivors[p] and fresh:
                firsts[fresh[0]] += 1
            table.append((*survivors[p], *fresh))
            if len(table[-1]) != self.n:
                raise RuntimeError("ring assignment: partition left short")  # never expected
        return table


class _ZoneFill:
    """Fills one zone's open slots (after `_Plan` kept what it could and chose zones)."""

    def __init__(self, plan: _Plan, zone: str, members: list[str], owners: list[set[str]]):
        self.plan = plan
        self.zone = zone
        self.members = members
        self.owners = owners
        self.owed = {m: plan.quota[m] - plan.load[m] for m in members}
        self.parts = {m: set[int]() for m in members}
        self.fresh = {m: set[int]() for m in members}
        for p, kept in enumerate(plan.kept):
            for m in kept:
                if m in self.parts:
                    self.parts[m].add(p)
        self.heap: list[tuple[int, int, str]] = []
        for m in members:
            self._push(m)

    def _push(self, member: str) -> None:
        owed = self.owed[member]
        if owed > 0:
            heapq.heappush(self.heap, (-owed, _mix(member, _LEVEL_SEED + owed), member))

    def _place(self, p: int, member: str) -> None:
        self.owners[p].add(member)
        self.parts[member].add(p)
        if member not in self.plan.prev[p]:
            self.fresh[member].add(p)

    def _take(self, p: int) -> str:
        """The member for one open slot of p in this zone."""
        for member in self.plan.prev[p]:  # a dropped previous owner coming back moves nothing
            if member in self.owed and self.owed[member] > 0 and member not in self.owners[p]:
                self.owed[member] -= 1
                self._push(member)
                return member
        skipped: list[str] = []
        found: str | None = None
        while self.heap:
            negative, _, member = heapq.heappop(self.heap)
            if -negative != self.owed[member]:
                continue  # stale entry
            if member in self.owners[p]:
                skipped.append(member)
                continue
            found = member
            break
        if found is None:
            if not skipped:
                raise RuntimeError("ring assignment: quotas do not cover the slots")  # invariant
            found = self._swap(p, skipped[0])
        else:
            self.owed[found] -= 1
            skipped.append(found)
        for member in skipped:
            self._push(member)
        return found

    def _swap(self, p: int, needy: str) -> str:
        """Every member still owed is in p: hand needy some full member b's slot elsewhere, b to p.

        Loads in a zone differ by at most one, so such a slot always exists.
        Prefer a slot b only just got (no extra movement).
        """
        for fresh_only in (True, False):
            for member in self.members:
                if member in self.owners[p]:
                    continue
                pool = self.fresh[member] if fresh_only else self.parts[member]
                for other in sorted(pool):
                    if needy not in self.owners[other]:
                        self.owners[other].discard(member)
                        self.parts[member].discard(other)
                        self.fresh[member].discard(other)
                        self._place(other, needy)
                        self.owed[needy] -= 1
                        return member
        raise RuntimeError("ring assignment: no swap found")  # excluded by the load argument

    def run(self, chosen: list[set[str]]) -> None:
        plan = self.plan
        for p in range(plan.q):
            want = plan.k if self.zone in chosen[p] else plan.k - 1
            if self.zone not in plan.cap:  # a zone smaller than k: all its members, everywhere
                want = len(self.members)
            have = sum(1 for m in self.owners[p] if plan.zone_of[m] == self.zone)
            for _ in range(want - have):
                self._place(p, self._take(p))


def assign(
    partitions: int,
    replicas: int,
    zones: Mapping[str, str],
    previous: Sequence[Sequence[str]] | None = None,
) -> list[tuple[str, ...]]:
    """Owners of each partition: `zones` maps member id -> zone; 1 <= replicas <= len(zones).

    `previous` is the old owner table (same length) to stay close to; owners it
    names that are not in `zones` are treated as gone.
    """
    if not 1 <= replicas <= len(zones):
        raise ValueError(f"replication factor {replicas} needs 1..{len(zones)} members")
    if previous is not None and len(previous) != partitions:
        raise ValueError("previous owner table has the wrong number of partitions")
    return _Plan(partitions, replicas, zones, previous).run()
