"""Hinted handoff: remember writes an owner missed, replay them when it is back.

Hints live in LMDB (`hints` sub-database, committed like any write), keyed by
target so one target's backlog is a range. The replay loop sends each
target's hints in batches and deletes them once the target has them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from ringkv_node.model.records import Record
from ringkv_node.storage import Storage, WriteTxn

__all__ = ["Hints"]

log = logging.getLogger("ringkv.hints")


class _Sender(Protocol):
    async def replicate_many(
        self, peer: str, items: Sequence[tuple[bytes, Record]]
    ) -> list[Record | None]: ...


class Hints:
    """The hints this node keeps for other owners: durable in LMDB, counted per
    target in memory (`backlog`, for status and metrics), replayed by target."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.backlog: dict[str, int] = storage.hint_counts()
        self.replayed = 0

    async def add(self, target: str, items: Sequence[tuple[bytes, Record]]) -> None:
        def op(wt: WriteTxn) -> None:
            for key, rec in items:
                wt.add_hint(target, key, rec)

        await self.storage.write(op)
        self.backlog[target] = self.backlog.get(target, 0) + len(items)

    async def replay(self, target: str, sender: _Sender, batch: int = 500) -> int:
        """Send `target` its hints until none are left; return how many were delivered."""
        delivered = 0
        while True:
            hints = self.storage.hints_for(target, batch)
            if not hints:
                self.backlog.pop(target, None)
                return delivered
            await sender.replicate_many(target, [(key, rec) for _, key, rec in hints])
            hint_keys = [h for h, _, _ in hints]

            def drop(wt: WriteTxn) -> int:
                return sum(wt.drop_hint(h) for h in hint_keys)  # noqa: B023

            dropped: int = await self.storage.write(drop)
            delivered += len(hints)
            self.replayed += len(hints)
            self.backlog[target] = max(0, self.backlog.get(target, 0) - dropped)
