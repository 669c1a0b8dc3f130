"""An in-process cluster over a fake network that can drop, delay and partition.

Each member is the real replica stack (LMDB storage, KV, hints, coordinator,
anti-entropy, membership change over its own ring state); only the
transport is fake. Messages are round-tripped through the real wire encoding
and answered by the real `peer_service.serve`. `add_node` starts a member
that is in no ring yet (a joiner), `restart` reopens one from its directory.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ringkv.ring import Member, Ring, initial_ring
from ringkv_node.cluster import AntiEntropy, Coordinator, Membership, PeerError, RingState
from ringkv_node.model import Record, wire
from ringkv_node.replica import KV, Hints, serve
from ringkv_node.storage import Storage


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms

    def seconds(self) -> float:
        """The same clock as a monotonic one, in seconds."""
        return self.ms / 1000


@dataclass
class FakeNetwork:
    cut: set[frozenset[str]] = field(default_factory=set)  # unordered pairs that cannot talk
    drop_replies_from: set[str] = field(default_factory=set)
    loss: float = 0.0  # probability that a request is lost
    delay_s: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    members: dict[str, SimNode] = field(default_factory=dict)
    sent: int = 0

    def partition(self, a: str, b: str) -> None:
        self.cut.add(frozenset((a, b)))

    def isolate(self, node: str) -> None:
        for other in self.members:
            if other != node:
                self.partition(node, other)

    def heal(self) -> None:
        self.cut.clear()
        self.drop_replies_from.clear()
        self.loss = 0.0

    async def deliver(self, src: str, dst: str, name: str, doc: Any) -> Any:
        self.sent += 1
        if frozenset((src, dst)) in self.cut or self.rng.random() < self.loss:
            raise PeerError(dst, "unreachable (fake network)")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        answer = await serve(self.members[dst].kv, name, wire.loads(wire.dumps(doc)))
        if dst in self.drop_replies_from:
            raise PeerError(dst, "reply lost (fake network)")
        return wire.loads(wire.dumps(answer))


class FakeTransport:
    def __init__(self, net: FakeNetwork, src: str) -> None:
        self.net = net
        self.src = src
        self.raw_calls: list[str] = []  # peers of each replicate_raw call (the bulk path)

    def replicate(self, peer: str, key: bytes, rec: Record) -> Awaitable[Record | None]:
        return asyncio.ensure_future(self._replicate_one(peer, key, rec))

    async def _replicate_one(self, peer: str, key: bytes, rec: Record) -> Record | None:
        return (await self.replicate_many(peer, [(key, rec)]))[0]

    async def replicate_many(
        self, peer: str, items: Sequence[tuple[bytes, Record]]
    ) -> list[Record | None]:
        doc = await self.net.deliver(self.src, peer, "replicate", wire.encode_records(items))
        return [wire.maybe_record(raw) for raw in doc]

    def replicate_raw(
        self, peer: str, items: Sequence[tuple[bytes, bytes]]
    ) -> Awaitable[list[bytes | None]]:
        self.raw_calls.append(peer)
        doc = [[key, raw] for key, raw in items]
        return asyncio.ensure_future(self.net.deliver(self.src, peer, "replicate", doc))

    def read(self, peer: str, key: bytes) -> Awaitable[Record | None]:
        return asyncio.ensure_future(self._read(peer, key))

    async def _read(self, peer: str, key: bytes) -> Record | None:
        doc = await self.net.deliver(self.src, peer, "read", [key])
        return wire.maybe_record(doc[0])

    async def call(self, peer: str, name: str, doc: Any) -> Any:
        return await self.net.deliver(self.src, peer, name, doc)

    def is_down(self, peer: str) -> bool:
        return False  # a fake link fails each call on its own, and is never skipped

    def forget_failures(self) -> None:
        pass


@dataclass
class SimNode:
    id: str
    kv: KV
    hints: Hints
    coordinator: Coordinator
    anti_entropy: AntiEntropy
    transport: FakeTransport
    rings: RingState
    membership: Membership
    path: Path

    def close(self) -> None:
        self.membership.stop()
        self.kv.storage.close()


def sim_node(
    net: FakeNetwork, tmp: Path, member: str, ring: Ring, clock: Clock, *, drop_delay_s: float = 0
) -> SimNode:
    """A member over `tmp / member` (new, or reopened with what it stored), on `ring`."""
    path = tmp / member
    storage = Storage(str(path), map_size=64 << 20, partitions=ring.partitions)
    kv = KV(storage, member, clock_ms=clock, tombstone_grace_ms=60_000)
    hints = Hints(storage)
    transport = FakeTransport(net, member)
    rings = RingState(ring)
    coordinator = Coordinator(member, kv, transport, hints, rings)
    ae = AntiEntropy(member, kv, transport, rings, clock_ms=clock, grace_ms=60_000, settle_s=0)
    membership = Membership(
        member, kv, transport, rings, hints, ae, drop_delay_s=drop_delay_s, monotonic=clock.seconds
    )
    node = SimNode(member, kv, hints, coordinator, ae, transport, rings, membership, path)
    net.members[member] = node
    return node


def build(tmp: Path, size: int = 3, partitions: int = 16) -> tuple[FakeNetwork, Ring, Clock]:
    net = FakeNetwork()
    clock = Clock()
    ring = initial_ring([Member(f"n{i}", f"fake://n{i}") for i in range(size)], partitions, 3)
    for member in ring.member_ids:
        sim_node(net, tmp, member, ring, clock)
    return net, ring, clock


def add_node(net: FakeNetwork, tmp: Path, member: str, ring: Ring, clock: Clock) -> SimNode:
    """A new, empty member that holds `ring` (which it is not in: it owns nothing)."""
    return sim_node(net, tmp, member, ring, clock)


async def restart(net: FakeNetwork, tmp: Path, member: str, clock: Clock) -> SimNode:
    """Stop `member` (its streaming too) and start it again from its directory,
    resuming a joining ring it had stored, as a node does at start-up."""
    old = net.members[member]
    ring = old.rings.ring
    old.close()
    node = sim_node(net, tmp, member, ring, clock)
    await node.membership.resume()
    return node


class HeldWriter:
    """Holds a storage's syncer (what makes applied writes durable) until
    released: writes are applied, and wait to be acknowledged, as on a stalled disk."""

    def __init__(self, storage: Storage) -> None:
        self.gate = threading.Event()
        entered = threading.Event()

        def hold() -> None:
            entered.set()
            self.gate.wait(10)

        storage._committer.call_in_order(hold)
        assert entered.wait(5)
        self.storage = storage

    async def release(self) -> None:
        self.gate.set()
        await self.storage.write(lambda wt: None)  # everything before it is persisted


def spy_calls(transport: FakeTransport, after: Callable[[list[str]], Awaitable[None]]) -> list[str]:
    """Record the names of `transport`'s calls; after each answer, await
    `after(names so far)` (to change the cluster between two looks).
    `del transport.call` restores the real calls."""
    names: list[str] = []
    real_call = transport.call

    async def call(peer: str, name: str, doc: Any) -> Any:
        answer = await real_call(peer, name, doc)
        names.append(name)
        await after(names)
        return answer

    transport.call = call  # type: ignore[method-assign]
    return names
