"""Backups in the cluster: KVBackup Jobs, the schedule, retention, bootstrap restores.

The I/O shell around `backupspec`, `jobs` and `backupplan`:

- `Backups.step_backup` is one step of a KVBackup: create its Job, then
  follow it until it completed or failed, and write the outcome to status.
  Its cluster's turn steps every running KVBackup of the cluster with the
  bodies it listed, so a KVBackup has no loop (and no finalizer) of its own;
  `Backups.reconcile_backup` reads one by name first, for its event handler
  when its KVCluster does not exist;
- `Backups.cluster_turn` is the backup part of a KVCluster's turn (called by
  `Reconciler`): `status.lastBackup` and the BackupReady condition, the
  schedule (create the KVBackup that is due), retention (a prune Job, then
  delete the pruned KVBackups), and `spec.bootstrap.fromBackup` (a restore
  Job once every pod is ready; the cluster is Restoring, not Ready, until it
  completed).

Every turn reads what is there and does at most one thing of each kind, so a
crash anywhere is repaired by the next turn: a scheduled KVBackup's name is
its schedule time (created twice, it exists once), a prune Job lists its
KVBackups in an annotation (deleted only once the data is gone), and a
restore Job is found again by its name. Blocking; it runs in kopf's worker
threads.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ringkv_operator.apply import Ownership, ownership
from ringkv_operator.backupplan import (
    CLUSTER_LABEL,
    FINISHED,
    SCHEDULED_LABEL,
    BackupView,
    backup_status,
    backup_summary,
    due,
    next_run,
    prune,
    scheduled_name,
    view,
)
from ringkv_operator.backupspec import (
    BackupPolicy,
    BackupSpec,
    Bootstrap,
    Destination,
    job_name,
    parse_backup,
    parse_backup_policy,
    parse_bootstrap,
)
from ringkv_operator.jobs import JobOutcome, backup_job, outcome, prune_job, restore_job
from ringkv_operator.k8s import ApiException, Kube, conflict, missing
from ringkv_operator.model import (
    API_VERSION,
    BACKUP_KIND,
    KIND,
    MANAGED_BY,
    Cluster,
    SpecError,
    parse_cluster,
)
from ringkv_operator.status import conditions, iso, parse_time, status_patch

__all__ = ["Backups"]

log = logging.getLogger("ringkv.operator")

PRUNE_ANNOTATION = "ringkv.io/prune"


@dataclass
class Backups:
    kube: Kube
    node_image: str
    busy_interval_s: float = 2.0
    idle_interval_s: float = 30.0
    clock: Callable[[], float] = time.time

    # -- a KVBackup ------------------------------------------------------------------

    def reconcile_backup(self, namespace: str, name: str) -> float | None:
        """One turn of a KVBackup read by name: its event handler's entry, for one
        whose KVCluster does not exist (yet). Seconds to the next, None once finished."""
        body = self.kube.read(BACKUP_KIND, namespace, name)
        if body is None:
            return None
        previous: dict[str, Any] = dict(body.get("status") or {})
        if previous.get("phase") in FINISHED:
            return None
        try:
            wanted = parse_backup(body).cluster
        except SpecError as exc:
            self._backup_status(body, previous, _failed(previous, exc))
            return None
        cluster_body = self.kube.cluster(namespace, wanted)
        if cluster_body is None:
            doc = {**previous, "phase": "Pending", "message": f"waiting for KVCluster {wanted}"}
            self._backup_status(body, previous, doc)
            return self.idle_interval_s
        try:
            cluster = parse_cluster(cluster_body)
        except SpecError as exc:
            doc = {**previous, "phase": "Pending", "message": f"KVCluster {wanted}: {exc}"}
            self._backup_status(body, previous, doc)
            return self.idle_interval_s
        doc = self.step_backup(body, cluster)
        return None if doc.get("phase") in FINISHED else self.busy_interval_s

    def step_backup(self, body: Mapping[str, Any], cluster: Cluster) -> dict[str, Any]:
        """One step of the KVBackup `body` (as read or listed) of `cluster`: create
        its Job, or follow it; write the status and return it (finished once its
        phase is Completed or Failed, which is told on the KVCluster too)."""
        previous: dict[str, Any] = dict(body.get("status") or {})
        if previous.get("phase") in FINISHED:
            return previous
        try:
            spec = parse_backup(body)
        except SpecError as exc:
            doc = _failed(previous, exc)
        else:
            if spec.cluster != cluster.name:
                name = body["metadata"]["name"]
                raise ValueError(f"KVBackup {name} backs up {spec.cluster}, not {cluster.name}")
            doc = self._follow_job(body, previous, spec, cluster)
        if self._backup_status(body, previous, doc) and doc.get("phase") in FINISHED:
            self._event(_cluster_ref(cluster), KIND, doc, str(body["metadata"]["name"]))
        return doc

    def _follow_job(
        self,
        body: Mapping[str, Any],
        previous: Mapping[str, Any],
        spec: BackupSpec,
        cluster: Cluster,
    ) -> dict[str, Any]:
        """The KVBackup's next status: its Job created, or its Job's outcome."""
        name = str(body["metadata"]["name"])
        namespace = cluster.namespace
        uid = str(body["metadata"].get("uid") or "")
        job = job_name(name)
        live = self.kube.read("Job", namespace, job)
        result: JobOutcome | None = None
        if live is None:
            if previous.get("job"):
                return {
                    **previous,
                    "phase": "Failed",
                    "completedAt": iso(self.clock()),
                    "message": f"its Job {job} was deleted before it finished",
                }
            self.kube.create(
                backup_job(
                    cluster,
                    backup=name,
                    backup_uid=uid,
                    destination=spec.destination,
                    verify=spec.verify,
                    image=cluster.spec.image or self.node_image,
                )
            )
            log.info("%s/%s: created Job %s", namespace, name, job)
        elif ownership(live, uid) != Ownership.OURS:
            return {**previous, "phase": "Failed", "message": f"Job {job} exists and is not ours"}
        else:
            result = outcome(live, self._job_pods(namespace, job))
        return backup_status(
            previous, result, job=job, location=spec.destination.location(name), now=self.clock()
        )

    def _job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        return self.kube.list("Pod", namespace, {"job-name": job})

    def _backup_status(
        self, body: Mapping[str, Any], previous: Mapping[str, Any], doc: Mapping[str, Any]
    ) -> bool:
        """Write `doc` if it differs from `previous`; False when the KVBackup is gone."""
        if dict(doc) == dict(previous):
            return True
        meta = body["metadata"]
        patch = status_patch(previous, doc)
        try:
            self.kube.patch(
                BACKUP_KIND, meta["namespace"], meta["name"], {"status": patch}, sub="status"
            )
        except ApiException as exc:
            if missing(exc):  # deleted since it was listed: its Job goes with it
                return False
            raise
        if doc.get("phase") != previous.get("phase"):
            self._event(body, BACKUP_KIND, doc, meta["name"])
        return True

    def _event(
        self, involved: Mapping[str, Any], kind: str, doc: Mapping[str, Any], name: str
    ) -> None:
        phase = str(doc.get("phase"))
        reason = {"Completed": "BackupCompleted", "Failed": "BackupFailed"}.get(
            phase, f"Backup{phase}"
        )
        message = str(doc.get("message") or "")
        if kind == KIND:
            message = f"KVBackup {name}: {message}"
        try:
            self.kube.event(
                {**involved, "kind": kind, "apiVersion": API_VERSION},
                "Warning" if phase == "Failed" else "Normal",
                reason,
                message,
            )
        except ApiException as exc:  # events are best effort
            log.warning("could not post event %s: %s", reason, exc.reason)

    # -- a KVCluster's turn --------------------------------------------------------------

    def cluster_turn(
        self,
        body: Mapping[str, Any],
        cluster: Cluster,
        previous: Mapping[str, Any],
        doc: dict[str, Any],
        *,
        settled: bool,
    ) -> bool:
        """The backup part of a cluster's turn, into `doc`; True while work is in
        progress (the turn comes back soon)."""
        spec = body.get("spec") or {}
        policy = parse_backup_policy(spec.get("backup"))
        boot = parse_bootstrap(spec.get("bootstrap"))
        now = self.clock()
        busy = False
        backups: list[BackupView] = []
        for listed in self._listed_backups(cluster):
            b = view(listed)
            if b.phase not in FINISHED:  # one step of each running KVBackup
                b = view({**listed, "status": self.step_backup(listed, cluster)})
                busy = busy or b.phase not in FINISHED
            backups.append(b)
        restoring = False
        if boot is not None:
            restoring, restore_busy = self._bootstrap(cluster, boot, previous, doc, settled, now)
            busy = busy or restore_busy
        last, ready = backup_summary(backups)
        if last is not None:
            doc["lastBackup"] = last
        else:
            doc.pop("lastBackup", None)
        if ready is not None:
            doc["conditions"] = conditions(
                doc["conditions"], {"BackupReady": ready}, now, cluster.generation
            )
        state: dict[str, Any] = {}
        if policy is not None:
            if not restoring:
                state = self._schedule(body, cluster, policy, previous, now)
            busy = self._retention(cluster, policy, backups, state) or busy
        if state:
            doc["backup"] = state
        return busy

    def _listed_backups(self, cluster: Cluster) -> list[dict[str, Any]]:
        return [
            b
            for b in self.kube.list(BACKUP_KIND, cluster.namespace)
            if (b.get("spec") or {}).get("cluster") == cluster.name
        ]

    def _schedule(
        self,
        body: Mapping[str, Any],
        cluster: Cluster,
        policy: BackupPolicy,
        previous: Mapping[str, Any],
        now: float,
    ) -> dict[str, Any]:
        state = dict(previous.get("backup") or {})
        state.pop("pruning", None)
        if not policy.schedule:
            return {}
        last = parse_time(state.get("lastScheduleTime"))
        created = parse_time((body.get("metadata") or {}).get("creationTimestamp")) or now
        when = None if policy.suspend else due(policy.schedule, last, created, now)
        if when is not None:
            name = scheduled_name(cluster.name, when)
            try:
                self.kube.create(self._scheduled_backup(body, cluster, policy, name))
                log.info("%s/%s: scheduled KVBackup %s", cluster.namespace, cluster.name, name)
            except ApiException as exc:
                if not conflict(exc):  # 409: this turn ran before, after a crash
                    raise
            state["lastScheduleTime"] = iso(when)
            last = when
        state["nextScheduleTime"] = iso(next_run(policy.schedule, max(now, last or 0.0)))
        return state

    def _scheduled_backup(
        self, body: Mapping[str, Any], cluster: Cluster, policy: BackupPolicy, name: str
    ) -> dict[str, Any]:
        spec = body.get("spec") or {}
        return {
            "apiVersion": API_VERSION,
            "kind": BACKUP_KIND,
            "metadata": {
                "name": name,
                "namespace": cluster.namespace,
                # Not owned by the KVCluster: its backups outlive it, to restore it from.
                "labels": {
                    CLUSTER_LABEL: cluster.name,
                    SCHEDULED_LABEL: "true",
                    "app.kubernetes.io/managed-by": MANAGED_BY,
                    "app.kubernetes.io/part-of": "ringkv",
                },
            },
            "spec": {
                "cluster": cluster.name,
                "destination": dict(spec["backup"]["destination"]),
                "verify": policy.verify,
            },
        }

    def _retention(
        self,
        cluster: Cluster,
        policy: BackupPolicy,
        backups: list[BackupView],
        state: dict[str, Any],
    ) -> bool:
        """Delete what retention does not keep, data first; True while a prune runs."""
        job = job_name(cluster.name, "prune")
        live = self.kube.read("Job", cluster.namespace, job)
        if live is not None and ownership(live, cluster.uid) == Ownership.OURS:
            names = json.loads(
                ((live.get("metadata") or {}).get("annotations") or {}).get(PRUNE_ANNOTATION)
                or "[]"
            )
            result = outcome(live, self._job_pods(cluster.namespace, job))
            if result.state == "Running":
                state["pruning"] = names
                return True
            if result.state == "Succeeded":
                for name in names:
                    self.kube.delete(BACKUP_KIND, cluster.namespace, name)
                log.info("%s/%s: pruned %s", cluster.namespace, cluster.name, ", ".join(names))
                self._cluster_event(
                    cluster, "Normal", "BackupsPruned", "deleted " + ", ".join(names)
                )
            else:
                self._cluster_event(cluster, "Warning", "PruneFailed", result.message)
            self.kube.delete("Job", cluster.namespace, job)
            return True
        if policy.retention is None:
            return False
        doomed = prune(backups, policy.retention)
        if not doomed:
            return False
        by_name = {b.name: b for b in backups}
        first = by_name[doomed[0]].destination
        group = [n for n in doomed if by_name[n].destination == first]
        try:
            destination = parse_backup({"spec": {"cluster": cluster.name, "destination": first}})
        except SpecError as exc:
            log.warning("%s/%s: cannot prune %s: %s", cluster.namespace, cluster.name, group, exc)
            return False
        self.kube.create(
            prune_job(
                cluster,
                destination=destination.destination,
                backups=group,
                image=cluster.spec.image or self.node_image,
            )
        )
        state["pruning"] = sorted(group)
        return True

    def _bootstrap(
        self,
        cluster: Cluster,
        boot: Bootstrap,
        previous: Mapping[str, Any],
        doc: dict[str, Any],
        settled: bool,
        now: float,
    ) -> tuple[bool, bool]:
        """(still restoring, busy). Keeps the cluster out of Ready until the restore
        of `spec.bootstrap.fromBackup` completed."""
        restore = dict(previous.get("restore") or {})
        if restore.get("phase") == "Completed":
            doc["restore"] = restore
            return False, False
        source: tuple[Destination, str | None] | None = None
        if boot.backup is not None:
            kvb = self.kube.read(BACKUP_KIND, cluster.namespace, boot.backup)
            phase = ((kvb or {}).get("status") or {}).get("phase")
            if kvb is not None and phase == "Completed":
                source = (parse_backup(kvb).destination, boot.backup)
            else:
                restore.update(
                    phase="Waiting",
                    message=f"waiting for KVBackup {boot.backup} to complete"
                    + (f" (it is {phase})" if phase else " (there is none)"),
                )
        else:
            assert boot.destination is not None
            source = (boot.destination, boot.backup_id)
        job = job_name(cluster.name, "restore")
        if source is not None:
            dest, backup_id = source
            restore["source"] = dest.location(backup_id) if backup_id else dest.cli_location()
            live = self.kube.read("Job", cluster.namespace, job)
            if live is None:
                if settled:
                    self.kube.create(
                        restore_job(
                            cluster,
                            destination=dest,
                            backup_id=backup_id,
                            image=cluster.spec.image or self.node_image,
                        )
                    )
                    restore.update(phase="Running", job=job, startedAt=iso(now))
                    restore["message"] = f"Job {job} restores {restore['source']}"
                    self._cluster_event(cluster, "Normal", "RestoreStarted", restore["message"])
                else:
                    restore.update(phase="Waiting", message="waiting for every pod to be ready")
            else:
                self._restore_progress(
                    cluster, restore, outcome(live, self._job_pods(cluster.namespace, job))
                )
        doc["restore"] = restore
        if restore.get("phase") == "Completed":
            return False, False
        failed = restore.get("phase") == "Failed"
        phase = "Failed" if failed else "Restoring"
        if doc.get("phase") not in ("Paused",):
            if previous.get("phase") == phase and previous.get("phaseSince"):
                doc["phaseSince"] = previous["phaseSince"]
            elif doc.get("phase") != phase:
                doc["phaseSince"] = iso(now)
            doc["phase"] = phase
            doc["message"] = str(restore.get("message") or "restoring")
        doc["conditions"] = conditions(
            doc["conditions"],
            {"Ready": ("False", "RestoreFailed" if failed else "Restoring", doc["message"])},
            now,
            cluster.generation,
        )
        return True, not failed

    def _restore_progress(
        self, cluster: Cluster, restore: dict[str, Any], result: JobOutcome
    ) -> None:
        job = job_name(cluster.name, "restore")
        reported = restore.get("phase") == "Failed"
        restore["job"] = job
        if result.started_at:
            restore["startedAt"] = result.started_at
        if result.state == "Running":
            restore.update(phase="Running", message=f"Job {job} restores {restore.get('source')}")
            return
        restore["completedAt"] = result.completed_at or iso(self.clock())
        if result.state == "Failed":
            restore.update(
                phase="Failed",
                message=f"the restore Job {job} failed: {result.message}; delete the Job "
                "to try again",
            )
            if not reported:
                self._cluster_event(cluster, "Warning", "RestoreFailed", restore["message"])
            return
        s = result.summary
        for key in ("records", "written"):
            if isinstance(s.get(key), int):
                restore[key] = s[key]
        restore.update(
            phase="Completed",
            message=f"restored {restore.get('written', '?')} records from {restore.get('source')}",
        )
        self._cluster_event(cluster, "Normal", "RestoreCompleted", restore["message"])

    def _cluster_event(self, cluster: Cluster, type_: str, reason: str, message: str) -> None:
        try:
            self.kube.event(_cluster_ref(cluster), type_, reason, message)
        except ApiException as exc:
            log.warning("could not post event %s: %s", reason, exc.reason)


def _cluster_ref(cluster: Cluster) -> dict[str, Any]:
    """What an Event about the KVCluster needs of it."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": cluster.name, "namespace": cluster.namespace, "uid": cluster.uid},
    }


def _failed(previous: Mapping[str, Any], exc: SpecError) -> dict[str, Any]:
    """The status of a KVBackup whose spec cannot run."""
    return {**previous, "phase": "Failed", "message": str(exc)}
