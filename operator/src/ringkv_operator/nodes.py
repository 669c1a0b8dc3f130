"""Reaching the storage nodes: where each pod answers, and what it says.

The resolver is the one seam between the operator and the network. In a
cluster a pod answers at its DNS name, `<name>-<i>.<name>-peers.<ns>.svc:8080`
(`PodDNS`). Outside one (development against kind, or the tier-3 tests
where real node processes on 127.0.0.1 stand in for the pods), a JSON file
maps `"<namespace>/<pod>"` to a URL (`MapFile`, re-read when it changes).

`NodeProbe` asks every pod for its `/v1/status`, `/admin/v1/rebalance` and
ring, all pods at once in threads, with the cluster token; a pod that does
not answer in time is reported unreachable, never raised. The HTTP goes
through `ringkv.admin.Rebalancer`, the same driver `ringkv local` uses.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from ringkv.admin import Rebalancer
from ringkv.errors import RingkvError
from ringkv.ring import Ring
from ringkv_operator.model import Cluster
from ringkv_operator.plan import NodeReport

__all__ = ["MapFile", "NodeProbe", "PodDNS", "Resolver", "resolver_from"]


class Resolver(Protocol):
    def url(self, cluster: Cluster, ordinal: int) -> str:
        """Where the operator reaches pod `ordinal` of `cluster` ("" when unknown)."""
        ...


class PodDNS:
    def url(self, cluster: Cluster, ordinal: int) -> str:
        return cluster.pod_url(ordinal)


class MapFile:
    """`{"<namespace>/<pod>": "http://host:port"}` in a JSON file, re-read on change."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._map: dict[str, str] = {}

    def _load(self) -> dict[str, str]:
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return {}
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                try:
                    with open(self.path) as f:
                        self._map = {str(k): str(v) for k, v in json.load(f).items()}
                    self._stamp = stamp
                except (OSError, ValueError):
                    pass  # half written: keep the last good map, read it again next time
            return self._map

    def url(self, cluster: Cluster, ordinal: int) -> str:
        return self._load().get(f"{cluster.namespace}/{cluster.pod(ordinal)}", "")


def resolver_from(spec: str) -> Resolver:
    """`dns` (the default), or `map:PATH`."""
    if spec in ("", "dns"):
        return PodDNS()
    if spec.startswith("map:"):
        return MapFile(spec[4:])
    raise ValueError(f"resolver {spec!r}: use dns or map:PATH")


class NodeProbe:
    """What every pod of a cluster reports, fetched in parallel."""

    def __init__(self, token: str, *, timeout: float = 3.0, workers: int = 8) -> None:
        self.rebalancer = Rebalancer(token, timeout=timeout)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="ringkv-probe")

    def _one(self, pod: str, url: str) -> tuple[NodeReport, Ring | None]:
        if not url:
            return NodeReport(pod, False), None
        try:
            status = self.rebalancer.status(url)
            progress = self.rebalancer.progress(url)
            ring = self.rebalancer.ring(url)
        except (RingkvError, OSError, ValueError, KeyError):
            return NodeReport(pod, False), None
        return NodeReport.from_docs(pod, status, progress), ring

    def probe(self, urls: Mapping[str, str]) -> tuple[dict[str, NodeReport], dict[int, Ring]]:
        """Reports by pod, and the committed rings seen, by epoch."""
        futures = {pod: self._pool.submit(self._one, pod, url) for pod, url in urls.items()}
        reports: dict[str, NodeReport] = {}
        rings: dict[int, Ring] = {}
        for pod, fut in futures.items():
            report, ring = fut.result()
            reports[pod] = report
            if ring is not None:
                rings.setdefault(ring.epoch, ring)
        return reports, rings

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.rebalancer.close()


def urls_for(cluster: Cluster, resolver: Resolver, ordinals: Iterable[int]) -> dict[str, str]:
    return {cluster.pod(o): resolver.url(cluster, o) for o in ordinals}
