"""The node's view of the ring: the ring it serves, the one joining, and newer epochs seen.

One object, built before anything that needs it and handed to each: the
transport (which stamps its calls with the epoch, finds a member's URL, and
reports the epochs peers answer with), the coordinator and anti-entropy
(which route by it), membership (which changes it) and the node (which
fetches a newer ring when a peer shows one). It replaces a construction loop
that was broken with a `holder` list, getter lambdas and a patched callback.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from ringkv.ring import Ring
from ringkv_node.storage import Storage, WriteTxn

__all__ = ["PENDING_META_KEY", "RING_META_KEY", "RingState", "load_ring", "save_ring"]

RING_META_KEY = b"ring"
PENDING_META_KEY = b"pending-ring"


class RingState:
    """The current ring, the joining ring (epoch + 1, until commit or abort), and
    who wants to know when a peer reports a newer epoch."""

    __slots__ = ("_watchers", "pending", "ring")

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self.pending: Ring | None = None
        self._watchers: list[Callable[[str, int], None]] = []

    @property
    def epoch(self) -> int:
        return self.ring.epoch

    def member_url(self, member: str) -> str:
        """A member's URL from the current ring, else from the joining one."""
        for ring in (self.ring, self.pending):
            if ring is not None and member in ring.member_ids:
                return ring.member(member).url
        raise KeyError(member)

    def watch(self, on_newer: Callable[[str, int], None]) -> None:
        """Call `on_newer(peer, epoch)` whenever a peer reports an epoch above ours."""
        self._watchers.append(on_newer)

    def saw_epoch(self, peer: str, epoch: int) -> None:
        """A peer answered (or called) with `epoch` (every internal message carries it)."""
        if epoch > self.ring.epoch:
            for on_newer in self._watchers:
                on_newer(peer, epoch)


def load_ring(storage: Storage) -> Ring | None:
    """The ring stored in LMDB, if any."""
    raw = storage.get_meta(RING_META_KEY)
    return None if raw is None else Ring.from_dict(json.loads(raw))


async def save_ring(storage: Storage, ring: Ring) -> None:
    data = json.dumps(ring.to_dict()).encode()

    def store(wt: WriteTxn) -> None:
        wt.put_meta(RING_META_KEY, data)

    await storage.write(store)
