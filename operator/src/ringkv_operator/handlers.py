"""The kopf wiring: one reconcile loop per KVCluster, woken by what it owns.

Every KVCluster gets a kopf daemon (a thread: the handler is synchronous, so
kopf runs it in its executor and never on its event loop). The daemon runs
`Reconciler.reconcile` turn after turn: every `busy_interval` while work is
in progress, every `idle_interval` otherwise, and at once when something it
watches changes: the KVCluster itself, its StatefulSet, its pods. That is
level-triggered reconciliation with one loop per object, so two turns of one
cluster never run at the same time. On SIGTERM or deletion kopf sets
`stopped`; the turn in flight finishes first.

Load with `kopf run -m ringkv_operator.handlers` (tests do, through
`kopf.testing.KopfRunner`) or through `ringkv-operator`, which adds leader
election and metrics around it. Configuration comes from the memo that
`ringkv-operator` passes, else from `RINGKV_OPERATOR_*` variables.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import kopf

from ringkv_operator.backups import Backups
from ringkv_operator.k8s import Kube, api_client
from ringkv_operator.model import BACKUP_PLURAL, GROUP, MANAGED_BY, PLURAL, VERSION
from ringkv_operator.reconciler import OperatorConfig, Reconciler

__all__ = ["Kicks"]

log = logging.getLogger("ringkv.operator")

MIN_SPACING_S = 0.3  # between two turns of one cluster, however many events arrive
ERROR_DELAY_S = 5.0


class Kicks:
    """A wake-up flag per KVCluster (namespace, name)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[tuple[str, str], threading.Event] = {}

    def get(self, namespace: str, name: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault((namespace, name), threading.Event())

    def kick(self, namespace: str | None, name: str | None) -> None:
        if namespace and name:
            self.get(namespace, name).set()

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._events.pop((namespace, name), None)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.execution.max_workers = int(os.environ.get("RINGKV_OPERATOR_WORKERS", "64"))
    settings.persistence.finalizer = f"{GROUP}/operator"
    settings.posting.level = logging.WARNING  # our own Events tell the story
    settings.watching.server_timeout = 300
    config = memo.get("config") or OperatorConfig.from_env(os.environ)
    memo["config"] = config
    if "reconciler" not in memo:
        memo["reconciler"] = Reconciler(Kube(api_client()), config)
    memo["kicks"] = Kicks()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """A pod's ServiceAccount, else $KUBECONFIG as it is now (the kubernetes
    client's own default was fixed when it was imported)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.cleanup()
def close(memo: kopf.Memo, **_: Any) -> None:
    reconciler = memo.get("reconciler")
    if reconciler is not None:
        reconciler.close()


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_backoff=1.0)
def cluster_loop(
    stopped: kopf.DaemonStopped, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    """Reconcile one KVCluster until it is deleted or the operator stops: a turn,
    then another after the delay it returns, or at once when kicked."""
    assert namespace is not None  # KVClusters are namespaced
    reconciler: Reconciler = memo["reconciler"]
    kick: threading.Event = memo["kicks"].get(namespace, name)
    try:
        while not stopped:
            kick.clear()
            try:
                delay = reconciler.reconcile(namespace, name)
            except Exception:
                log.exception(
                    "%s/%s: reconcile failed; again in %.0f s", namespace, name, ERROR_DELAY_S
                )
                delay = ERROR_DELAY_S
            if delay is None:  # the KVCluster is gone
                return
            deadline = time.monotonic() + delay
            time.sleep(MIN_SPACING_S)
            while not stopped and not kick.is_set() and time.monotonic() < deadline:
                kick.wait(min(0.5, max(0.0, deadline - time.monotonic())))
    finally:
        memo["kicks"].forget(namespace, name)


@kopf.on.event(GROUP, VERSION, PLURAL)
def cluster_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    memo["kicks"].kick(namespace, name)


@kopf.on.event(GROUP, VERSION, BACKUP_PLURAL)
def backup_changed(
    namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, memo: Any, **_: Any
) -> None:
    """A KVBackup is stepped by its cluster's loop (no daemon of its own, so no
    finalizer on it); one naming no existing KVCluster says so in its status."""
    if status.get("phase") in ("Completed", "Failed") or namespace is None:
        return
    cluster = spec.get("cluster")
    backups: Backups = memo["reconciler"].backups
    if cluster and backups.kube.cluster(namespace, str(cluster)) is not None:
        memo["kicks"].kick(namespace, str(cluster))
    else:
        backups.reconcile_backup(namespace, name)


@kopf.on.event("apps", "v1", "statefulsets", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
def statefulset_changed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    memo["kicks"].kick(namespace, labels.get("app.kubernetes.io/instance"))


@kopf.on.event("", "v1", "pods", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
def pod_changed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    memo["kicks"].kick(namespace, labels.get("app.kubernetes.io/instance"))


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
def job_changed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    """A backup's, restore's or prune's Job wakes its cluster's loop."""
    memo["kicks"].kick(namespace, labels.get("app.kubernetes.io/instance"))
