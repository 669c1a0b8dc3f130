"""The coordinator: any node serves any key by asking that key's owners.

Write: stamp once, send to all N owners in parallel, answer after W acks;
an owner that fails gets a durable hint (hinted handoff). Read: ask R owners
(itself first when it owns the key), the newest version wins, and stale
owners are repaired in the background (read repair). Everything remote goes
through `Transport`, so the same code runs over HTTP or a fake network.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ringkv.ring import Ring
from ringkv_node.hints import Hints
from ringkv_node.kv import KV
from ringkv_node.quorum import newest, required_acks, stale
from ringkv_node.records import Record
from ringkv_node.transport import PeerError, Transport

__all__ = ["Coordinator", "NotEnoughReplicasError", "WriteResult"]

log = logging.getLogger("ringkv.coordinator")


class NotEnoughReplicasError(Exception):
    """Fewer owners answered than the consistency level needs."""

    def __init__(self, needed: int, answered: int, owners: int, op: str) -> None:
        super().__init__(
            f"{op} needs {needed} of {owners} replicas; only {answered} answered"
            + ("; the write may still be applied by hinted handoff" if op == "write" else "")
        )
        self.needed = needed
        self.answered = answered


@dataclass(frozen=True, slots=True)
class WriteResult:
    previous: Record | None  # newest previous record among acknowledging replicas
    acks: int


class Coordinator:
    def __init__(
        self,
        node_id: str,
        kv: KV,
        transport: Transport,
        hints: Hints,
        get_ring: Callable[[], Ring],
    ) -> None:
        self.node_id = node_id
        self.kv = kv
        self.transport = transport
        self.hints = hints
        self.get_ring = get_ring
        self._background: set[asyncio.Task[None]] = set()
        self.forwarded = 0  # requests for keys this node does not own
        self.coordinated = 0

    def owners(self, key: bytes) -> tuple[str, ...]:
        owners = self.get_ring().owners_of_key(key)
        self.coordinated += 1
        if self.node_id not in owners:
            self.forwarded += 1
        return owners

    # -- writes --------------------------------------------------------------

    async def _write_one(self, owner: str, key: bytes, rec: Record) -> Record | None:
        if owner == self.node_id:
            return (await self.kv.apply(key, rec)).previous
        try:
            return await self.transport.replicate(owner, key, rec)
        except PeerError:
            await self.hints.add(owner, [(key, rec)])
            raise

    async def write(self, key: bytes, rec: Record, level: str) -> WriteResult:
        owners = self.owners(key)
        needed = required_acks(level, len(owners))
        self.kv.hlc.observe(rec.version.ts)
        tasks = [asyncio.ensure_future(self._write_one(o, key, rec)) for o in owners]
        acks: list[Record | None] = []
        failed = 0
        pending: set[asyncio.Future[Record | None]] = set(tasks)
        while pending and len(acks) < needed and failed <= len(owners) - needed:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    acks.append(task.result())
                else:
                    failed += 1
        for task in pending:  # the slower owners finish (or get hinted) in the background
            self._track(task)
        if len(acks) < needed:
            raise NotEnoughReplicasError(needed, len(acks), len(owners), "write")
        return WriteResult(newest(acks), len(acks))

    async def write_atomic(
        self, items: list[tuple[bytes, Record]], level: str
    ) -> list[Record | None]:
        """Write records of one partition as one transaction on every owner.

        Returns, per item, the newest previous record among acknowledging owners.
        """
        owners = self.owners(items[0][0])
        needed = required_acks(level, len(owners))
        for _, rec in items:
            self.kv.hlc.observe(rec.version.ts)

        async def one(owner: str) -> list[Record | None]:
            if owner == self.node_id:
                return [a.previous for a in await self.kv.apply_many(items)]
            try:
                return await self.transport.replicate_many(owner, items)
            except PeerError:
                await self.hints.add(owner, items)
                raise

        results = await asyncio.gather(*(one(o) for o in owners), return_exceptions=True)
        acked: list[list[Record | None]] = []
        for r in results:
            if isinstance(r, PeerError):
                continue
            if isinstance(r, BaseException):
                raise r
            acked.append(r)
        if len(acked) < needed:
            raise NotEnoughReplicasError(needed, len(acked), len(owners), "write")
        return [newest(column) for column in zip(*acked, strict=True)]

    # -- reads ---------------------------------------------------------------

    async def _read_one(self, owner: str, key: bytes) -> Record | None:
        if owner == self.node_id:
            return self.kv.storage.get(key)
        return await self.transport.read(owner, key)

    async def read(self, key: bytes, level: str) -> Record | None:
        """The newest record among R owners (tombstones and expired included)."""
        owners = self.owners(key)
        needed = required_acks(level, len(owners))
        order = sorted(owners, key=lambda o: (o != self.node_id, self.transport_down(o)))
        if needed == 1 and order[0] == self.node_id:
            return self.kv.storage.get(key)
        answers: dict[str, Record | None] = {}
        queue = list(order)
        pending: dict[asyncio.Future[Record | None], str] = {}
        while len(answers) < needed:
            while queue and len(pending) + len(answers) < needed:
                owner = queue.pop(0)
                pending[asyncio.ensure_future(self._read_one(owner, key))] = owner
            if not pending:
                raise NotEnoughReplicasError(needed, len(answers), len(owners), "read")
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                owner = pending.pop(task)
                if task.exception() is None:
                    answers[owner] = task.result()
        winner = newest(answers.values())
        for owner in stale(answers, winner):
            assert winner is not None
            self._track(asyncio.ensure_future(self._repair(owner, key, winner)))
        return winner

    def transport_down(self, owner: str) -> bool:
        is_down = getattr(self.transport, "is_down", None)
        return bool(is_down(owner)) if is_down is not None else False

    async def _repair(self, owner: str, key: bytes, rec: Record) -> None:
        if owner == self.node_id:
            await self.kv.apply(key, rec)
        else:
            await self.transport.replicate(owner, key, rec)

    def _track(self, fut: asyncio.Future[Any]) -> None:
        task = asyncio.ensure_future(_quietly(fut))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Let background repairs and slow replica writes finish (on shutdown)."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout_s)


async def _quietly(fut: asyncio.Future[Any]) -> None:
    try:
        await fut
    except PeerError as exc:
        log.debug("background replica call failed: %s", exc)
    except Exception:
        log.exception("background replica call failed")
