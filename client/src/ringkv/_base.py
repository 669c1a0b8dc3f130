"""What `Client` and `AsyncClient` share before they send: their set-up.

Both take the same arguments and keep them the same way, and both run a
call as `_core.run_call`'s request loop (routing, retries, error decoding),
which each shell drives with its own send and sleep (httpx's `BaseClient`
plays this part there).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from ringkv import _core
from ringkv._core import Call, RetryPolicy, Router
from ringkv.keys import Limits

__all__ = ["ClientBase"]


class ClientBase:
    """The settings of a client, and the request loop of one call."""

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        token: str | None,
        direct: bool,
        timeout: float,
        pool_size: int,
        retry: RetryPolicy | None,
        limits: Limits,
    ) -> None:
        self._target = target
        self._token = token
        self._direct = direct
        self._timeout = timeout
        self._pool_size = pool_size
        self._retry = retry or RetryPolicy()
        self._limits = limits

    def _steps(
        self, call: Call, router: Router, base_url: str | None = None
    ) -> Generator[_core.Action, Any, Any]:
        """`call`'s request loop; the shell drives it (send, sleep) to its `Response`."""
        return _core.run_call(call, router, self._retry, self._token, base_url)
