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
from ringkv.keys import DEFAULT_LIMITS, Limits

__all__ = ["ClientBase"]


class ClientBase:
    """The settings of a client, and the request loop of one call.

    `target` is a URL, a list of seed URLs or `ringkv://<headless service>:port`;
    `token` the cluster token; `direct=False` sends to those URLs only;
    `timeout` bounds each request; `pool_size` (default `POOL_SIZE`) the
    connections kept per node; `retry` the retry policy; `limits` the key
    and value limits checked before sending. Each shell's `_start` opens
    what it sends with.
    """

    POOL_SIZE = 32

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        token: str | None = None,
        direct: bool = True,
        timeout: float = 5.0,
        pool_size: int | None = None,
        retry: RetryPolicy | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        _core.check_target(target)
        _core.check_settings(direct, pool_size)
        self._target = target
        self._token = _core.check_token(token)
        self._direct = direct
        self._timeout = _core.check_timeout(timeout)
        self._pool_size = self.POOL_SIZE if pool_size is None else pool_size
        self._retry = retry or RetryPolicy()
        self._limits = limits
        self._start()

    def _start(self) -> None:
        """The shell's own set-up: its router and pool (or what makes them later)."""

    def _steps(
        self, call: Call, router: Router, base_url: str | None = None
    ) -> Generator[_core.Action, Any, Any]:
        """`call`'s request loop; the shell drives it (send, sleep) to its `Response`."""
        return _core.run_call(call, router, self._retry, self._token, base_url)
