"""An answer that is not ready yet: a future, and how to make the answer from its result.

The hot paths answer without a coroutine or task per request: a key route
(`http.dataplane`) and a replica's peer call (`replica.peer_service`) return
the answer at once when they can, else a `Pending` whose future the shell
(fast lane, peer link, aiohttp) waits on by callback. Pure: no I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, TypeVar

__all__ = ["Pending", "settle"]

T = TypeVar("T")


class Pending(NamedTuple, Generic[T]):
    """Waits for `future`; `finish` makes the answer from the future's result."""

    future: asyncio.Future[Any]
    finish: Callable[[Any], T]


async def settle(answer: T | Pending[T]) -> T:
    """The answer itself, or what a `Pending` comes to (for shells that may await)."""
    if isinstance(answer, Pending):
        result: T = answer.finish(await answer.future)
        return result
    return answer
