"""Group commit: one writer thread, many waiting writers, one fsync per batch.

LMDB allows one write transaction at a time and a durable commit costs an
fsync, so writes are queued to a single thread that takes everything waiting
(up to `max_batch`), applies it in one transaction, commits once, and only
then wakes each writer with its own outcome. While one batch is being
fsync'd the next one accumulates, so throughput grows with concurrency.

This module knows nothing of LMDB: it is given `run_batch`, which applies a
list of operations and returns one `Outcome` per operation, and it is tested
with a plain function in its place.
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

    A named tuple: one is made per write, on the writer thread.
    """

    value: Any = None
    error: BaseException | None = None


_Item = tuple[Any, "asyncio.Future[Any]", asyncio.AbstractEventLoop]
_STOP = object()


def _resolve(items: Sequence[_Item], outcomes: Sequence[Outcome]) -> None:
    for (_, fut, _), outcome in zip(items, outcomes, strict=True):
        if fut.done():  # the waiter was cancelled; the write still happened
            continue
        if outcome.error is not None:
            fut.set_exception(outcome.error)
        else:
            fut.set_result(outcome.value)


class GroupCommitter(Generic[Op]):
    """Runs `run_batch` on a dedicated thread over batches of queued operations."""

    def __init__(
        self,
        run_batch: Callable[[list[Op]], list[Outcome]],
        *,
        max_batch: int = 1024,
        on_batch: Callable[[int, float], None] | None = None,
        name: str = "ringkv-writer",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._batch_started: float | None = None  # monotonic, while a batch runs
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def backlog(self) -> int:
        """Operations queued and not yet taken into a batch (approximate)."""
        return self._queue.qsize()

    def busy_for(self) -> float:
        """Seconds the batch being committed has run so far (0 when idle): a
        commit stuck on a stalled disk shows here."""
        started = self._batch_started
        return 0.0 if started is None else time.monotonic() - started

    async def submit(self, op: Op) -> Any:
        """Queue `op`; return its result once the batch holding it is committed."""
        return await self.enqueue(op)

    def enqueue(self, op: Op) -> asyncio.Future[Any]:
        """Queue `op`; the future resolves once the batch holding it is committed."""
        if self._closed:
            raise ClosedError("storage is closing; write not applied")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.put((op, fut, loop))
        return fut

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking writes, finish those already queued, join the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            items: list[_Item] = [first]
            while len(items) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                items.append(nxt)
            self._commit(items)

    def _commit(self, items: list[_Item]) -> None:
        started = time.perf_counter()
        self._batch_started = time.monotonic()
        try:
            outcomes = self._run_batch([op for op, _, _ in items])
            if len(outcomes) != len(items):
                raise RuntimeError("run_batch returned the wrong number of outcomes")
        except BaseException as exc:  # never let the writer thread die
            outcomes = [Outcome(error=exc)] * len(items)
        finally:
            self._batch_started = None
        if self._on_batch is not None:
            self._on_batch(len(items), time.perf_counter() - started)
        by_loop: dict[asyncio.AbstractEventLoop, tuple[list[_Item], list[Outcome]]] = {}
        for item, outcome in zip(items, outcomes, strict=True):
            its, outs = by_loop.setdefault(item[2], ([], []))
            its.append(item)
            outs.append(outcome)
        for loop, (its, outs) in by_loop.items():
            # A closed loop (RuntimeError) has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, its, outs)
