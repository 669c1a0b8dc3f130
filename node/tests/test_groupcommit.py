from __future__ import annotations

import asyncio
import threading

import pytest

from ringkv_node.storage.groupcommit import ClosedError, GroupCommitter, Outcome


class Disk:
    """`apply` and `persist` for a committer of ints: records what each applied
    batch and each persisted group held, and can hold a persist "on the disk"."""

    def __init__(self) -> None:
        self.applied: list[list[int]] = []
        self.persisted: list[list[bytes]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_next: BaseException | None = None

    def apply(self, ops: list[int]) -> tuple[list[Outcome], list[bytes]]:
        self.applied.append(list(ops))
        outcomes = [
            Outcome(error=ValueError(op)) if op < 0 else Outcome(value=op * 2) for op in ops
        ]
        return outcomes, [b"%d" % op for op in ops if op >= 0]

    def persist(self, records: list[bytes]) -> None:
        self.entered.set()
        self.gate.wait(5)
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        self.persisted.append(list(records))

    async def hold(self, gc: GroupCommitter[int], op: int) -> asyncio.Future[int]:
        """Start one write and keep its persist "on the disk" until `gate` is set."""
        self.gate.clear()
        self.entered.clear()
        first = gc.enqueue(op)
        await asyncio.to_thread(self.entered.wait, 5)
        return first


def committer(disk: Disk, **kw: object) -> GroupCommitter[int]:
    return GroupCommitter(disk.apply, disk.persist, **kw)  # type: ignore[arg-type]


async def test_each_writer_gets_its_own_outcome() -> None:
    disk = Disk()
    gc = committer(disk)
    try:
        assert await gc.submit(21) == 42
        with pytest.raises(ValueError, match="-3"):
            await gc.submit(-3)
        assert disk.persisted == [[b"21"]]
    finally:
        gc.close()


async def test_writes_of_one_loop_turn_share_a_transaction() -> None:
    disk = Disk()
    gc = committer(disk)
    try:
        results = await asyncio.gather(*(gc.enqueue(i) for i in range(50)))
        assert results == [i * 2 for i in range(50)]
        assert disk.applied == [list(range(50))]
    finally:
        gc.close()


async def test_writes_applied_during_a_sync_share_the_next_one() -> None:
    disk = Disk()
    sizes: list[int] = []
    gc = committer(disk, on_batch=lambda n, s: sizes.append(n))
    try:
        first = await disk.hold(gc, 0)  # [0] is being fsync'd
        rest = []
        for i in range(1, 101):  # applied in ten loop turns, while the disk is busy
            rest.append(gc.enqueue(i))
            if i % 10 == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(0.02)
        assert not first.done() and not any(f.done() for f in rest)
        disk.gate.set()
        results = await asyncio.gather(first, *rest)
        assert results == [i * 2 for i in range(101)]
        assert len(disk.applied) == 11  # a transaction a loop turn
        assert disk.persisted[1] == [b"%d" % i for i in range(1, 101)]  # one write, one fsync
        assert sizes == [1, 100]
    finally:
        gc.close()


async def test_backlog_counts_writes_not_yet_durable() -> None:
    disk = Disk()
    gc = committer(disk)
    try:
        assert gc.backlog() == 0
        first = await disk.hold(gc, 0)
        rest = [gc.enqueue(i) for i in range(1, 41)]
        assert gc.backlog() == 41
        disk.gate.set()
        await asyncio.gather(first, *rest)
        assert gc.backlog() == 0
    finally:
        gc.close()


async def test_busy_for_shows_how_long_the_running_sync_has_taken() -> None:
    disk = Disk()
    gc = committer(disk)
    try:
        assert gc.busy_for() == 0.0
        first = await disk.hold(gc, 1)  # the sync "hangs on the disk"
        await asyncio.sleep(0.05)
        assert gc.busy_for() >= 0.05
        disk.gate.set()
        assert await first == 2
        assert gc.busy_for() == 0.0
    finally:
        gc.close()


async def test_transactions_are_capped() -> None:
    disk = Disk()
    gc = committer(disk, max_batch=10)
    try:
        await asyncio.gather(*(gc.enqueue(i) for i in range(25)))
        assert [len(b) for b in disk.applied] == [10, 10, 5]
    finally:
        gc.close()


async def test_a_failed_sync_fails_its_writers_and_the_next_ones_go_on() -> None:
    disk = Disk()
    gc = committer(disk)
    try:
        disk.fail_next = OSError("disk on fire")
        with pytest.raises(OSError, match="disk on fire"):
            await gc.submit(1)
        assert await gc.submit(2) == 4
    finally:
        gc.close()


async def test_a_crashing_apply_fails_its_writers_not_the_committer() -> None:
    calls = 0

    def flaky(ops: list[int]) -> tuple[list[Outcome], list[bytes]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug")
        return [Outcome(value=op) for op in ops], []

    gc: GroupCommitter[int] = GroupCommitter(flaky, lambda records: None)
    try:
        with pytest.raises(RuntimeError, match="bug"):
            await gc.submit(1)
        assert await gc.submit(2) == 2
    finally:
        gc.close()


async def test_calls_in_order_run_between_the_syncs_before_and_after_them() -> None:
    disk = Disk()
    gc = committer(disk)
    seen: list[int] = []
    try:
        await gc.submit(1)
        gc.call_in_order(lambda: seen.append(len(disk.persisted)))
        await gc.submit(2)
        assert seen == [1]  # after [1] was persisted, before [2]
        assert disk.persisted == [[b"1"], [b"2"]]
    finally:
        gc.close()


async def test_close_applies_and_persists_queued_writes_then_refuses() -> None:
    disk = Disk()
    gc = committer(disk)
    futs = [gc.enqueue(i) for i in range(5)]  # not applied yet: no loop turn has passed
    gc.close()
    assert disk.applied == [[0, 1, 2, 3, 4]]
    assert disk.persisted == [[b"%d" % i for i in range(5)]]
    assert await asyncio.gather(*futs) == [0, 2, 4, 6, 8]
    with pytest.raises(ClosedError):
        await gc.submit(9)
