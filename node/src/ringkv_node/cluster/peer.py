"""The peer seam: what the cluster logic needs from the network, and how it fails.

The coordinator, hinted handoff, anti-entropy, streaming and membership only
see `Transport`. The node runs them over `ringkv_node.net.HttpTransport`
(peer links and pooled HTTP); the tests run them over a fake network that
can drop, delay and partition. Kept apart from any implementation so that
the cluster layer imports no aiohttp (and no implementation imports it back).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from ringkv_node.model.records import Record

__all__ = ["PeerError", "Transport"]


class PeerError(Exception):
    """A peer did not answer, or answered with an error."""

    def __init__(self, peer: str, message: str) -> None:
        super().__init__(f"{peer}: {message}")
        self.peer = peer


class Transport(Protocol):
    """How a node calls its peers (every call may raise `PeerError`)."""

    def replicate(self, peer: str, key: bytes, rec: Record) -> Awaitable[Record | None]:
        """Apply `rec` on `peer`; resolves to what it held before (coalesced)."""

    async def replicate_many(
        self, peer: str, items: Sequence[tuple[bytes, Record]]
    ) -> list[Record | None]:
        """Apply all `items` on `peer` in one request and one transaction."""

    def replicate_raw(
        self, peer: str, items: Sequence[tuple[bytes, bytes]]
    ) -> Awaitable[list[bytes | None]]:
        """Apply packed records on `peer` in one call and one transaction (the
        bulk path); resolves to what it held before, packed."""

    def read(self, peer: str, key: bytes) -> Awaitable[Record | None]:
        """`peer`'s record for `key`, tombstones included (coalesced)."""

    async def call(self, peer: str, name: str, doc: Any) -> Any:
        """Any other internal call (`scan`, `digests`, `bucket`, `ring`, `ping`)."""

    def is_down(self, peer: str) -> bool:
        """True while `peer` is skipped after a recent failure (callers try others first)."""

    def forget_failures(self) -> None:
        """Forget which peers failed (after start-up, when they were still starting)."""
