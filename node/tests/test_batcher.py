"""Batcher: items of one loop turn go out together; each caller gets its own result."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ringkv_node.net.batcher import Batcher


class Peer:
    """A `send` whose answers the test releases by hand."""

    def __init__(self) -> None:
        self.sent: list[list[int]] = []
        self.answers: list[asyncio.Future[Any]] = []

    def __call__(self, items: list[int]) -> asyncio.Future[Any]:
        self.sent.append(list(items))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.answers.append(fut)
        return fut

    def answer(self, i: int) -> None:
        self.answers[i].set_result([item * 10 for item in self.sent[i]])


def as_list(doc: Any) -> list[int]:
    return list(doc)


async def turn() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_one_loop_turn_is_one_request_and_each_gets_its_own_result() -> None:
    peer = Peer()
    batcher: Batcher[int, int] = Batcher(peer, as_list)
    futs = [batcher.enqueue(i) for i in range(5)]
    await turn()
    assert peer.sent == [[0, 1, 2, 3, 4]]
    peer.answer(0)
    assert await asyncio.gather(*futs) == [0, 10, 20, 30, 40]


async def test_items_wait_while_max_inflight_requests_are_out_then_go_together() -> None:
    peer = Peer()
    batcher: Batcher[int, int] = Batcher(peer, as_list, max_inflight=1, max_batch=3)
    first = batcher.enqueue(1)
    await turn()
    later = [batcher.enqueue(i) for i in range(2, 7)]
    await turn()
    assert peer.sent == [[1]] and batcher.pending == 5
    peer.answer(0)
    assert await first == 10
    await turn()
    assert peer.sent == [[1], [2, 3, 4]]  # one at a time, at most max_batch items
    peer.answer(1)
    await turn()
    peer.answer(2)
    assert await asyncio.gather(*later) == [20, 30, 40, 50, 60]
    assert peer.sent[2] == [5, 6]


async def test_a_failed_request_fails_its_items_only() -> None:
    peer = Peer()
    batcher: Batcher[int, int] = Batcher(peer, as_list, max_inflight=1)
    first = batcher.enqueue(1)
    await turn()
    second = batcher.enqueue(2)
    peer.answers[0].set_exception(ConnectionResetError("gone"))
    with pytest.raises(ConnectionResetError):
        await first
    await turn()
    peer.answer(1)
    assert await second == 20


async def test_a_wrong_number_of_answers_fails_the_batch() -> None:
    peer = Peer()
    batcher: Batcher[int, int] = Batcher(peer, as_list)
    futs = [batcher.enqueue(i) for i in range(3)]
    await turn()
    peer.answers[0].set_result([1])
    for fut in futs:
        with pytest.raises(RuntimeError, match="1 results for 3 items"):
            await fut


async def test_a_send_that_raises_fails_its_items() -> None:
    def broken(items: list[int]) -> asyncio.Future[Any]:
        raise ValueError("no link")

    batcher: Batcher[int, int] = Batcher(broken, as_list)
    fut = batcher.enqueue(1)
    with pytest.raises(ValueError, match="no link"):
        await fut


async def test_close_cancels_what_is_queued_and_in_flight() -> None:
    peer = Peer()
    batcher: Batcher[int, int] = Batcher(peer, as_list, max_inflight=1)
    sent = batcher.enqueue(1)
    await turn()
    queued = batcher.enqueue(2)
    await batcher.close()
    await turn()
    assert peer.answers[0].cancelled()
    assert sent.cancelled() and queued.cancelled()
