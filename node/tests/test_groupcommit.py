from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from ringkv_node.groupcommit import ClosedError, GroupCommitter, Outcome


class Recorder:
    """A run_batch that records batch sizes and can hold a batch open."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    async def hold(self, start: Callable[[], asyncio.Future[int]]) -> asyncio.Future[int]:
        """Start one write and keep its batch inside the commit until `gate` is
        set (a commit "waiting on the disk"); return the write's future."""
        self.gate.clear()
        first = start()
        await asyncio.to_thread(self.entered.wait, 5)
        return first

    def __call__(self, ops: list[int]) -> list[Outcome]:
        self.entered.set()
        self.gate.wait(5)
        self.batches.append(list(ops))
        return [Outcome(error=ValueError(op)) if op < 0 else Outcome(value=op * 2) for op in ops]


async def test_each_writer_gets_its_own_outcome() -> None:
    rec = Recorder()
    gc: GroupCommitter[int] = GroupCommitter(rec)
    try:
        assert await gc.submit(21) == 42
        with pytest.raises(ValueError, match="-3"):
            await gc.submit(-3)
    finally:
        gc.close()


async def test_writers_waiting_during_a_commit_share_the_next_one() -> None:
    rec = Recorder()
    sizes: list[int] = []
    gc: GroupCommitter[int] = GroupCommitter(rec, on_batch=lambda n, s: sizes.append(n))
    try:
        # batch [0] is "fsyncing"
        first = await rec.hold(lambda: asyncio.ensure_future(gc.submit(0)))
        rest = [asyncio.ensure_future(gc.submit(i)) for i in range(1, 101)]
        await asyncio.sleep(0.05)
        rec.gate.set()
        results = await asyncio.gather(first, *rest)
        assert results == [i * 2 for i in range(101)]
        assert rec.batches[0] == [0]
        assert rec.batches[1] == list(range(1, 101))  # one transaction, one fsync
        assert sizes == [1, 100]
    finally:
        gc.close()


async def test_backlog_counts_writes_not_yet_taken_into_a_batch() -> None:
    rec = Recorder()
    gc: GroupCommitter[int] = GroupCommitter(rec)
    try:
        assert gc.backlog() == 0
        first = await rec.hold(lambda: gc.enqueue(0))  # batch [0] is being committed
        rest = [gc.enqueue(i) for i in range(1, 41)]
        assert gc.backlog() == 40
        rec.gate.set()
        await asyncio.gather(first, *rest)
        assert gc.backlog() == 0
    finally:
        gc.close()


async def test_busy_for_shows_how_long_the_running_commit_has_taken() -> None:
    rec = Recorder()
    gc: GroupCommitter[int] = GroupCommitter(rec)
    try:
        assert gc.busy_for() == 0.0
        first = await rec.hold(lambda: gc.enqueue(1))  # the commit "hangs on the disk"
        await asyncio.sleep(0.05)
        assert gc.busy_for() >= 0.05
        rec.gate.set()
        assert await first == 2
        assert gc.busy_for() == 0.0
    finally:
        gc.close()


async def test_batches_are_capped() -> None:
    rec = Recorder()
    gc: GroupCommitter[int] = GroupCommitter(rec, max_batch=10)
    try:
        first = await rec.hold(lambda: asyncio.ensure_future(gc.submit(0)))
        rest = [asyncio.ensure_future(gc.submit(i)) for i in range(1, 26)]
        await asyncio.sleep(0.05)
        rec.gate.set()
        await asyncio.gather(first, *rest)
        assert [len(b) for b in rec.batches] == [1, 10, 10, 5]
    finally:
        gc.close()


async def test_a_crashing_batch_fails_its_writers_not_the_thread() -> None:
    calls = 0

    def flaky(ops: list[int]) -> list[Outcome]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("disk on fire")
        return [Outcome(value=op) for op in ops]

    gc: GroupCommitter[int] = GroupCommitter(flaky)
    try:
        with pytest.raises(RuntimeError, match="disk on fire"):
            await gc.submit(1)
        assert await gc.submit(2) == 2
    finally:
        gc.close()


async def test_close_finishes_queued_writes_then_refuses() -> None:
    rec = Recorder()
    gc: GroupCommitter[int] = GroupCommitter(rec)
    rec.gate.clear()
    futs = [asyncio.ensure_future(gc.submit(i)) for i in range(5)]
    await asyncio.sleep(0.02)
    closer = asyncio.ensure_future(asyncio.to_thread(gc.close))
    await asyncio.sleep(0.02)
    rec.gate.set()
    await closer
    assert await asyncio.gather(*futs) == [0, 2, 4, 6, 8]
    with pytest.raises(ClosedError):
        await gc.submit(9)
