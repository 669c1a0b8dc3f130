"""Coalesce concurrent small requests to one peer into few large ones.

Each replica write or read is tiny; one request per item would cost more
than the item itself. Items submitted in the same event-loop turn, or while
`max_inflight` requests to the peer are already under way, go out together in
one request of up to `max_batch` items; each caller still gets its own result.
Transport-agnostic: it is given `send(items)`, which returns a future of the
peer's answer, and `unpack(answer)`, which makes that answer one result per
item. Callbacks, not tasks: this runs for nearly every replica write.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["Batcher"]

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(
        self,
        send: Callable[[list[T]], asyncio.Future[Any]],
        unpack: Callable[[Any], Sequence[R]],
        *,
        max_batch: int = 256,
        max_inflight: int = 2,
    ) -> None:
        self._send = send
        self._unpack = unpack
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._inflight: set[asyncio.Future[Any]] = set()
        self._scheduled = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def enqueue(self, item: T) -> asyncio.Future[R]:
        """Queue `item`; the future resolves with its own result."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending and len(self._inflight) < self._max_inflight:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                sent = self._send([item for item, _ in batch])
            except Exception as exc:
                _fail(batch, exc)
                continue
            self._inflight.add(sent)
            sent.add_done_callback(functools.partial(self._answered, batch))

    def _answered(
        self, batch: list[tuple[T, asyncio.Future[R]]], sent: asyncio.Future[Any]
    ) -> None:
        self._inflight.discard(sent)
        try:
            results = self._unpack(sent.result())
            if len(results) != len(batch):
                raise RuntimeError(f"peer answered {len(results)} results for {len(batch)} items")
        except asyncio.CancelledError:
            for _, fut in batch:
                fut.cancel()
        except Exception as exc:
            _fail(batch, exc)
        else:
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
        if self._pending:
            self._flush()

    async def close(self) -> None:
        for sent in list(self._inflight):
            sent.cancel()
        for _, fut in self._pending:
            if not fut.done():
                fut.cancel()
        self._pending.clear()


def _fail(batch: Sequence[tuple[Any, asyncio.Future[Any]]], exc: BaseException) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(exc)
