"""One active operator at a time: leader election on a coordination.k8s.io Lease.

kopf's own peering freezes every instance when two have the same priority,
which is what replicas of one Deployment have; so, as controller-runtime
does, the instances race for a Lease: the holder renews it every
`duration / 3`; the others retry until it has gone unrenewed for `duration`.
An instance that cannot renew in time stops (its kopf exits, the kubelet
restarts it as a candidate): two leaders would drive two rebalances.

`decide` is the pure rule; `LeaderElector` does the API calls.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ringkv_operator.k8s import ApiException, Kube

__all__ = ["LeaderElector", "LeaseView", "decide"]

log = logging.getLogger("ringkv.operator.leader")


@dataclass(frozen=True, slots=True)
class LeaseView:
    holder: str
    renewed: float  # seconds since the epoch
    duration: float
    transitions: int


def _micro(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: Any) -> float:
    if not text:
        return 0.0
    return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


def view(lease: Mapping[str, Any]) -> LeaseView:
    spec = lease.get("spec") or {}
    return LeaseView(
        holder=str(spec.get("holderIdentity") or ""),
        renewed=_parse(spec.get("renewTime") or spec.get("acquireTime")),
        duration=float(spec.get("leaseDurationSeconds") or 15),
        transitions=int(spec.get("leaseTransitions") or 0),
    )


def decide(lease: LeaseView | None, me: str, now: float) -> str:
    """`create` (no Lease), `renew` (ours), `take` (expired or released), or `wait`."""
    if lease is None:
        return "create"
    if lease.holder == me:
        return "renew"
    if not lease.holder or now - lease.renewed > lease.duration:
        return "take"
    return "wait"


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        *,
        duration_s: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration_s = duration_s
        self.clock = clock
        self._renewed = 0.0

    def _spec(self, lease: LeaseView | None, take: bool) -> dict[str, Any]:
        now = _micro(self.clock())
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration_s),
            "renewTime": now,
        }
        if take or lease is None:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = (lease.transitions + 1) if lease is not None else 0
        return spec

    def try_once(self) -> bool:
        """One attempt to acquire or renew; True while we hold the Lease."""
        live = self.kube.read("Lease", self.namespace, self.name)
        lease = view(live) if live is not None else None
        what = decide(lease, self.identity, self.clock())
        if what == "wait":
            return False
        try:
            if what == "create":
                self.kube.create(
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": self._spec(None, True),
                    }
                )
            else:
                assert live is not None
                # A full update with the resourceVersion read: if another
                # instance wrote in between, the server answers 409.
                self.kube.replace(
                    {
                        **live,
                        "spec": {**(live.get("spec") or {}), **self._spec(lease, what == "take")},
                    }
                )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        if what != "renew":
            log.info("became the leader (Lease %s/%s)", self.namespace, self.name)
        self._renewed = self.clock()
        return True

    def acquire(self, stop: threading.Event) -> bool:
        """Block until we lead (True) or `stop` is set (False)."""
        announced = False
        while not stop.is_set():
            try:
                if self.try_once():
                    return True
            except ApiException as exc:
                log.warning("leader election: %s", exc.reason)
            if not announced:
                log.info("another instance leads (Lease %s/%s); waiting", self.namespace, self.name)
                announced = True
            stop.wait(min(2.0, self.duration_s / 3))
        return False

    def keep(self, stop: threading.Event, on_lost: Callable[[], None]) -> None:
        """Renew until `stop`; call `on_lost` if the Lease could not be renewed in time."""
        while not stop.wait(self.duration_s / 3):
            try:
                if self.try_once():
                    continue
            except ApiException as exc:
                log.warning("renewing the Lease: %s", exc.reason)
            except OSError as exc:
                log.warning("renewing the Lease: %s", exc)
            if self.clock() - self._renewed > self.duration_s * 2 / 3:
                log.error("lost the leader Lease %s/%s: stopping", self.namespace, self.name)
                on_lost()
                return

    def release(self) -> None:
        """Give the Lease up on a clean exit, so that the next instance need not wait."""
        try:
            live = self.kube.read("Lease", self.namespace, self.name)
            if live is not None and view(live).holder == self.identity:
                spec = {**(live.get("spec") or {}), "holderIdentity": ""}
                self.kube.replace({**live, "spec": spec})
        except (ApiException, OSError) as exc:
            log.warning("releasing the Lease: %s", exc)
