"""Prometheus metrics of one node, in a registry of its own (tests run many apps).

Labelled children are cached: `labels()` costs more than the observation
itself on the request path.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "ringkv_requests_total",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "ringkv_request_duration_seconds",
            "HTTP request latency by route",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_batch = Histogram(
            "ringkv_commit_batch_ops",
            "Write operations per group-committed LMDB transaction (one fsync each)",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "ringkv_commit_duration_seconds",
            "Time to apply and commit (fsync) one write batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.keys = Gauge(
            "ringkv_storage_entries", "Records in LMDB (live + tombstones)", registry=r
        )
        self.storage_used = Gauge("ringkv_storage_used_bytes", "LMDB pages in use", registry=r)
        self.storage_map = Gauge("ringkv_storage_map_bytes", "LMDB map size", registry=r)
        self.purged = Counter(
            "ringkv_purged_total", "Expired keys and old tombstones purged", registry=r
        )
        self.ring_epoch = Gauge("ringkv_ring_epoch", "Epoch of the ring this node uses", registry=r)
        self.hints_pending = Gauge(
            "ringkv_hints_pending", "Hinted writes waiting for a replica", ["target"], registry=r
        )
        self.coordinated = Gauge(
            "ringkv_coordinated_requests",
            "Key requests coordinated here: for keys this node owns, or forwarded to others",
            ["kind"],
            registry=r,
        )
        self.out_of_sync = Gauge(
            "ringkv_buckets_out_of_sync",
            "Digest buckets that differed from peers in the last anti-entropy round",
            registry=r,
        )
        self._children: dict[tuple[str, ...], MetricWrapperBase] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        children = self._children
        key = (route, method, str(status))
        counter = children.get(key)
        if counter is None:
            counter = children[key] = self.requests.labels(route, method, str(status))
        counter.inc()  # type: ignore[attr-defined]
        lkey = (route, method)
        hist = children.get(lkey)
        if hist is None:
            hist = children[lkey] = self.latency.labels(route, method)
        hist.observe(seconds)  # type: ignore[attr-defined]

    def observe_batch(self, ops: int, seconds: float) -> None:
        self.commit_batch.observe(ops)
        self.commit_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
