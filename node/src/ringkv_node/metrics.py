"""Prometheus metrics of one node, in a registry of its own (tests run many apps).

Per-request counters and latency histograms are plain integers updated on
the event loop and exported by a custom collector: prometheus-client's
labelled metrics take a lock and several calls per observation, which shows
at tens of thousands of requests per second.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = RequestStats()
        r.register(self.requests)
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
        self.tombstones = Gauge(
            "ringkv_storage_tombstones", "Tombstones kept (of the entries)", registry=r
        )
        self.storage_used = Gauge("ringkv_storage_used_bytes", "LMDB pages in use", registry=r)
        self.storage_map = Gauge("ringkv_storage_map_bytes", "LMDB map size", registry=r)
        self.log_bytes = Gauge(
            "ringkv_wal_bytes", "Write-ahead log written since the last checkpoint", registry=r
        )
        self.checkpoint_age = Gauge(
            "ringkv_checkpoint_age_seconds", "Time since the last completed checkpoint", registry=r
        )
        self.purged = Counter(
            "ringkv_purged_total", "Expired keys and old tombstones purged", registry=r
        )
        self.ring_epoch = Gauge("ringkv_ring_epoch", "Epoch of the ring this node uses", registry=r)
        self.hints_pending = Gauge(
            "ringkv_hints_pending", "Hinted writes waiting for a replica", ["target"], registry=r
        )
        self.coordinated = Counts(
            "ringkv_coordinated_requests",
            "Key requests coordinated here: for keys this node owns, or forwarded to others",
            "kind",
        )
        r.register(self.coordinated)
        self.out_of_sync = Gauge(
            "ringkv_buckets_out_of_sync",
            "Digest buckets that differed from peers in the last anti-entropy round",
            registry=r,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.observe(route, method, status, seconds)

    def observe_batch(self, ops: int, seconds: float) -> None:
        self.commit_batch.observe(ops)
        self.commit_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Counts(Collector):
    """A counter by one label whose values are kept elsewhere (set `counts`
    before a scrape); exported as `<name>_total`."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.counts: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, n in sorted(self.counts.items()):
            family.add_metric([value], n)
        yield family


class RequestStats(Collector):
    """Request counts by (route, method, status) and latency by (route, method)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.buckets: dict[tuple[str, str], list[int]] = {}
        self.sums: dict[tuple[str, str], float] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        lkey = (route, method)
        counts = self.buckets.get(lkey)
        if counts is None:
            counts = self.buckets[lkey] = [0] * (len(_LATENCY_BUCKETS) + 1)
            self.sums[lkey] = 0.0
        counts[bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        self.sums[lkey] += seconds

    def collect(self) -> Iterator[Metric]:
        total = CounterMetricFamily(
            "ringkv_requests", "HTTP requests by route, method and status",
            labels=["route", "method", "status"],
        )  # fmt: skip
        for (route, method, status), n in sorted(self.counts.items()):
            total.add_metric([route, method, str(status)], n)
        yield total
        hist = HistogramMetricFamily(
            "ringkv_request_duration_seconds", "HTTP request latency by route",
            labels=["route", "method"],
        )  # fmt: skip
        for (route, method), counts in sorted(self.buckets.items()):
            cumulative, running = [], 0
            for bound, n in zip([*map(str, _LATENCY_BUCKETS), "+Inf"], counts, strict=True):
                running += n
                cumulative.append((bound, running))
            hist.add_metric([route, method], cumulative, self.sums[(route, method)])
        yield hist
