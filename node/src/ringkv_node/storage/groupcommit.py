"""Group commit: writes applied on the event loop, made durable by one syncer thread.

LMDB allows one write transaction at a time and durability costs an fsync, so
writes are grouped. Every write queued during one event-loop turn is applied
in one transaction by `apply` on the loop thread itself (quick: `storage`
commits LMDB without syncing and returns the batch's log record). What makes a
batch durable (`persist`: the log write and its fsync) runs on one syncer
thread, which takes every batch waiting, persists them with one write and one
fsync, and only then wakes each writer with its own outcome, in the order the
batches were applied. While one group is being fsync'd the next accumulates,
so throughput grows with concurrency.

Why the apply is not on a thread of its own (as it was): py-lmdb lets go of
the GIL in every put, and a writer thread must then win it back from the busy
event loop each time. Under a cluster's load a 30-write batch took 11 ms
instead of about 1, the node's own copy of its writes fell behind, and the
handoffs cost 15-20% of the CPU of a replicated write. The syncer holds the
GIL only to start a write and to hand the outcomes back.

Every writer waits for `persist`, whatever the durability: with async
durability it writes without an fsync, but an acknowledged write must still
be in the log (the kernel's page cache) to survive a SIGKILL.

This module knows nothing of LMDB: it is given `apply` and `persist`, and is
tested with plain functions in their place. `enqueue` is called on the event
loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

__all__ = ["ClosedError", "GroupCommitter", "Outcome"]

Op = TypeVar("Op")


class ClosedError(RuntimeError):
    """The committer is closed; the write was not applied."""


class Outcome(NamedTuple):
    """The result of one operation: a value, or the exception it failed with.

    A named tuple: one is made per write.
    """

    value: Any = None
    error: BaseException | None = None


_Item = tuple[Any, "asyncio.Future[Any]"]
_STOP = object()


class _Batch(NamedTuple):
    items: list[_Item]
    outcomes: list[Outcome]
    records: list[bytes]  # what `persist` makes durable
    loop: asyncio.AbstractEventLoop


class _Call(NamedTuple):
    fn: Callable[[], None]


def _resolve(items: Sequence[_Item], outcomes: Sequence[Outcome]) -> None:
    for (_, fut), outcome in zip(items, outcomes, strict=True):
        if fut.done():  # the waiter was cancelled; the write still happened
            continue
        if outcome.error is not None:
            fut.set_exception(outcome.error)
        else:
            fut.set_result(outcome.value)


class GroupCommitter(Generic[Op]):
    """Applies queued operations a loop turn at a time; a syncer thread persists them."""

    def __init__(
        self,
        apply: Callable[[list[Op]], tuple[list[Outcome], list[bytes]]],
        persist: Callable[[list[bytes]], None],
        *,
        max_batch: int = 1024,
        on_batch: Callable[[int, float], None] | None = None,
        after_apply: Callable[[], None] | None = None,
        name: str = "ringkv-syncer",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._apply = apply
        self._persist = persist
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._after_apply = after_apply
        self._pending: list[_Item] = []  # queued this loop turn, not applied yet
        self._loop_of_pending: asyncio.AbstractEventLoop | None = None
        self._waiting = 0  # operations queued and not yet handed back
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._busy_since: float | None = None  # monotonic, while the syncer works
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def backlog(self) -> int:
        """Operations queued and not yet handed back (not yet persisted)."""
        return self._waiting

    def busy_for(self) -> float:
        """Seconds the syncer has spent on what it is doing now (0 when idle): a
        write stuck on a stalled disk shows here."""
        started = self._busy_since
        return 0.0 if started is None else time.monotonic() - started

    async def submit(self, op: Op) -> Any:
        """Queue `op`; return its result once the batch holding it is durable."""
        return await self.enqueue(op)

    def enqueue(self, op: Op) -> asyncio.Future[Any]:
        """Queue `op`; the future resolves once the batch holding it is durable."""
        if self._closed:
            raise ClosedError("storage is closing; write not applied")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((op, fut))
        self._waiting += 1
        if len(self._pending) == 1:
            self._loop_of_pending = loop
            loop.call_soon(self._apply_pending)
        return fut

    def call_in_order(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the syncer thread once every batch applied so far is persisted
        (and before any applied later)."""
        self._queue.put(_Call(fn))

    def _apply_pending(self) -> None:
        items, self._pending = self._pending, []
        loop = self._loop_of_pending
        if not items or loop is None:  # `close` applied them already
            return
        for start in range(0, len(items), self._max_batch):
            chunk = items[start : start + self._max_batch]
            try:
                outcomes, records = self._apply([op for op, _ in chunk])
                if len(outcomes) != len(chunk):
                    raise RuntimeError("apply returned the wrong number of outcomes")
            except BaseException as exc:  # a bug in apply fails its writers, nothing more
                outcomes, records = [Outcome(error=exc)] * len(chunk), []
            self._queue.put(_Batch(chunk, outcomes, records, loop))
        if self._after_apply is not None:
            self._after_apply()

    def _hand_back(self, items: list[_Item], outcomes: Sequence[Outcome]) -> None:
        self._waiting -= len(items)
        _resolve(items, outcomes)

    def shut(self) -> None:
        """Stop taking writes and apply those already queued (on the loop's thread,
        or once that loop writes no more); `join` then waits for them to persist."""
        if self._closed:
            return
        self._closed = True
        self._apply_pending()
        self._queue.put(_STOP)

    def join(self, timeout: float = 30.0) -> None:
        """Wait for the syncer to persist what it was given and stop (any thread)."""
        self._thread.join(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """`shut`, then `join`."""
        self.shut()
        self.join(timeout)

    # -- the syncer thread ----------------------------------------------------

    def _loop(self) -> None:
        while True:
            entries = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    entries.append(self._queue.get_nowait())
            group: list[_Batch] = []
            for entry in entries:
                if isinstance(entry, _Batch):
                    group.append(entry)
                    continue
                self._sync(group)
                group = []
                if entry is _STOP:
                    return
                self._busy_since = time.monotonic()
                try:
                    entry.fn()
                except BaseException:  # never let the syncer die
                    pass
                finally:
                    self._busy_since = None
            self._sync(group)

    def _sync(self, group: list[_Batch]) -> None:
        """Persist a group of batches (one write, one fsync), then hand back their outcomes."""
        if not group:
            return
        records = [record for batch in group for record in batch.records]
        ops = sum(len(batch.items) for batch in group)
        started = time.perf_counter()
        self._busy_since = time.monotonic()
        failure: BaseException | None = None
        try:
            if records:
                self._persist(records)
        except BaseException as exc:  # every writer of the group learns of it
            failure = exc
        finally:
            self._busy_since = None
        if self._on_batch is not None:
            self._on_batch(ops, time.perf_counter() - started)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[list[_Item], list[Outcome]]]] = {}
        for batch in group:
            outcomes = batch.outcomes
            if failure is not None:
                outcomes = [Outcome(error=failure)] * len(batch.items)
            by_loop.setdefault(batch.loop, []).append((batch.items, outcomes))
        for loop, done in by_loop.items():
            # A closed loop (RuntimeError) has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._hand_back_all, done)

    def _hand_back_all(self, done: list[tuple[list[_Item], list[Outcome]]]) -> None:
        for items, outcomes in done:
            self._hand_back(items, outcomes)
