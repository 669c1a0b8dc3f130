"""The node's own state: its ring, readiness, and what /v1/status reports.

The ring is loaded from LMDB, or on first start built (epoch 1) from the
peers every node was given, so all nodes agree without talking.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from ringkv.ring import Member, Ring, initial_ring
from ringkv_node import __version__
from ringkv_node.errors import ApiError
from ringkv_node.kv import KV
from ringkv_node.metrics import Metrics
from ringkv_node.settings import Settings
from ringkv_node.storage import WriteTxn

__all__ = ["RING_META_KEY", "Node"]

RING_META_KEY = b"ring"


def ring_from_settings(settings: Settings) -> Ring:
    members = [Member(p.id, p.url, p.zone) for p in settings.peers]
    return initial_ring(members, settings.partitions, settings.replication_factor)


class Node:
    def __init__(
        self,
        settings: Settings,
        kv: KV,
        metrics: Metrics,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.kv = kv
        self.metrics = metrics
        self._monotonic = monotonic
        self._started = monotonic()
        self.ring: Ring = ring_from_settings(settings)
        self.ready = False
        self.draining = False

    async def load_ring(self) -> None:
        """Use the ring stored in LMDB, or store the epoch-1 ring from --peers."""
        raw = self.kv.storage.get_meta(RING_META_KEY)
        if raw is not None:
            self.ring = Ring.from_dict(json.loads(raw))
            return
        data = json.dumps(self.ring.to_dict()).encode()

        def store(wt: WriteTxn) -> None:
            wt.put_meta(RING_META_KEY, data)

        await self.kv.storage.write(store)

    def check_single_partition(self, keys: Sequence[bytes]) -> None:
        parts = {self.ring.partition_of(k) for k in keys}
        if len(parts) > 1:
            raise ApiError.bad_request(
                "atomic batch keys must share one partition: give them a common hash tag, "
                "e.g. user:{42}:name and user:{42}:email",
                "not_single_partition",
            )

    def not_ready_reasons(self) -> list[str]:
        reasons = []
        if self.draining:
            reasons.append("shutting down")
        if not self.ready:
            reasons.append("starting: storage or ring not loaded")
        if self.kv.storage.closed:
            reasons.append("storage closed")
        return reasons

    def refresh_gauges(self) -> None:
        st = self.kv.storage.stats()
        self.metrics.keys.set(st.entries)
        self.metrics.storage_used.set(st.used_bytes)
        self.metrics.storage_map.set(st.map_size)

    def status(self) -> dict[str, Any]:
        st = self.kv.storage.stats()
        owned = sorted(self.ring.partitions_of(self.settings.node_id))
        return {
            "node_id": self.settings.node_id,
            "version": __version__,
            "advertise_url": self.settings.advertise_url,
            "epoch": self.ring.epoch,
            "partitions": self.ring.partitions,
            "replication_factor": self.ring.replication_factor,
            "partitions_owned": len(owned),
            "durability": self.settings.durability,
            "ready": not self.not_ready_reasons(),
            "uptime_s": round(self._monotonic() - self._started, 3),
            "storage": {
                "entries": st.entries,
                "used_bytes": st.used_bytes,
                "map_size": st.map_size,
                "readers_used": st.readers_used,
                "max_readers": st.max_readers,
            },
            "hlc": self.kv.hlc.last,
        }
