"""The operator's Prometheus metrics, served on `--metrics-port` at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Metrics"]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconciles = Counter(
            "ringkv_operator_reconciles", "Reconcile turns, by result", ["result"], registry=r
        )
        self.errors = Counter(
            "ringkv_operator_reconcile_errors", "Reconcile turns that failed", registry=r
        )
        self.reconcile_seconds = Histogram(
            "ringkv_operator_reconcile_duration_seconds", "Time of one reconcile turn", registry=r
        )
        self.rebalance_seconds = Histogram(
            "ringkv_operator_rebalance_duration_seconds",
            "From a rebalance's first join to its commit",
            buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf")),
            registry=r,
        )
        self.rebalance_steps = Counter(
            "ringkv_operator_rebalance_steps",
            "Rebalance steps taken, by action",
            ["action"],
            registry=r,
        )
        self.leader = Gauge(
            "ringkv_operator_leader", "1 while this instance holds the leader Lease", registry=r
        )
        self.clusters = Gauge(
            "ringkv_operator_clusters", "KVClusters by phase", ["phase"], registry=r
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
