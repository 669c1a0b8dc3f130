"""The Jobs of backups: a `ringkv` CLI run in the cluster's node image.

Three kinds, one shape (`_job`):

- backup:  `ringkv backup create --to DEST --id <KVBackup name> [--verify restore]`
- restore: `ringkv restore --from LOCATION` into a KVCluster being bootstrapped
- prune:   `ringkv backup delete ID... --missing-ok`, retention's deletions

Each talks to the cluster through its client Service with the cluster token
(from the Secret, never argv), mounts the claim of a PVC destination at
/backup or gets the S3 credentials from the named Secret: the storage pods
need neither. The pod is labelled `ringkv.io/client: "true"`, so the
cluster's NetworkPolicy lets it in. The CLI writes its JSON summary to
/dev/termination-log, where the operator reads it (`outcome`); on a failure
the log's tail is the termination message instead.

`outcome` reads a Job and its pods back into a `JobOutcome`. Pure: no kopf,
no kubernetes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ringkv_operator.backupspec import BACKUP_MOUNT, Destination, job_name
from ringkv_operator.builders import (
    container_security_context,
    owner_reference,
    pod_security_context,
)
from ringkv_operator.model import API_VERSION, BACKUP_KIND, MANAGED_BY, Cluster

__all__ = [
    "BACKOFF_LIMIT",
    "JobOutcome",
    "backup_job",
    "outcome",
    "prune_job",
    "restore_job",
]

BACKOFF_LIMIT = 2  # a backup retried reuses its id; a restore or a delete is idempotent
TERMINATION_LOG = "/dev/termination-log"
TMP_SIZE = "8Gi"  # a restore drill's throw-away store lives in /tmp


def _labels(cluster: Cluster, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "ringkv",
        "app.kubernetes.io/instance": cluster.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "ringkv",
        "ringkv.io/client": "true",
    }


def _destination_env(dest: Destination) -> list[dict[str, Any]]:
    if dest.s3 is None:
        return []
    s3 = dest.s3
    env: list[dict[str, Any]] = [{"name": "RINGKV_S3_REGION", "value": s3.region}]
    if s3.endpoint:
        env.append({"name": "RINGKV_S3_ENDPOINT", "value": s3.endpoint})
    if s3.path_style:
        env.append({"name": "RINGKV_S3_PATH_STYLE", "value": "true"})
    if s3.secret:
        env += [
            {
                "name": key,
                "valueFrom": {"secretKeyRef": {"name": s3.secret, "key": key}},
            }
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        ]
    return env


def _job(
    cluster: Cluster,
    *,
    name: str,
    component: str,
    args: Sequence[str],
    destination: Destination,
    image: str,
    owner: Mapping[str, Any],
    extra_labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    labels = {**_labels(cluster, component), **(extra_labels or {})}
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}}]
    if destination.claim is not None:
        mounts.append({"name": "backup", "mountPath": BACKUP_MOUNT})
        volumes.append(
            {"name": "backup", "persistentVolumeClaim": {"claimName": destination.claim}}
        )
    env: list[dict[str, Any]] = [
        {"name": "RINGKV_URL", "value": cluster.client_url},
        {
            "name": "RINGKV_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": cluster.secret, "key": "token"}},
        },
        *_destination_env(destination),
    ]
    meta: dict[str, Any] = {
        "name": name,
        "namespace": cluster.namespace,
        "labels": labels,
        "ownerReferences": [dict(owner)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "enableServiceLinks": False,
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(),
                    "containers": [
                        {
                            "name": "ringkv",
                            "image": image,
                            "imagePullPolicy": cluster.spec.image_pull_policy,
                            "command": ["ringkv"],
                            "args": [*args, "--summary-file", TERMINATION_LOG],
                            "env": env,
                            "volumeMounts": mounts,
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "securityContext": container_security_context(),
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


def backup_owner(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": BACKUP_KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def backup_job(
    cluster: Cluster,
    *,
    backup: str,
    backup_uid: str,
    destination: Destination,
    verify: str,
    image: str,
) -> dict[str, Any]:
    """The Job of KVBackup `backup`: its id is the KVBackup's name."""
    args = [
        "backup",
        "create",
        "--to",
        destination.cli_location(),
        "--id",
        backup,
        "--cluster",
        cluster.name,
    ]
    if verify == "restore":
        args += ["--verify", "restore"]
    return _job(
        cluster,
        name=job_name(backup),
        component="backup",
        args=args,
        destination=destination,
        image=image,
        owner=backup_owner(backup, backup_uid),
        extra_labels={"ringkv.io/backup": backup},
    )


def restore_job(
    cluster: Cluster, *, destination: Destination, backup_id: str | None, image: str
) -> dict[str, Any]:
    """The Job that restores a backup into a KVCluster bootstrapped from it."""
    args = ["restore", "--from", destination.cli_location()]
    if backup_id:
        args += ["--id", backup_id]
    return _job(
        cluster,
        name=job_name(cluster.name, "restore"),
        component="restore",
        args=args,
        destination=destination,
        image=image,
        owner=owner_reference(cluster),
    )


def prune_job(
    cluster: Cluster, *, destination: Destination, backups: Sequence[str], image: str
) -> dict[str, Any]:
    """The Job that deletes the data of the KVBackups retention prunes (their
    names in the annotation `ringkv.io/prune`, for the operator to delete after)."""
    names = sorted(backups)
    return _job(
        cluster,
        name=job_name(cluster.name, "prune"),
        component="prune",
        args=["backup", "delete", "--from", destination.cli_location(), "--missing-ok", *names],
        destination=destination,
        image=image,
        owner=owner_reference(cluster),
        annotations={"ringkv.io/prune": json.dumps(names)},
    )


@dataclass(frozen=True, slots=True)
class JobOutcome:
    state: str  # Running, Succeeded or Failed
    started_at: str | None = None
    completed_at: str | None = None
    summary: Mapping[str, Any] = field(default_factory=dict)  # the CLI's JSON summary
    message: str = ""


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        state = (status.get("state") or {}).get("terminated")
        if state:
            return dict(state)
    return {}


def _when(pod: Mapping[str, Any]) -> str:
    return str(_terminated(pod).get("finishedAt") or "")


def outcome(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> JobOutcome:
    """What a Job did, from its conditions and its pods' termination messages."""
    status = job.get("status") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    started = status.get("startTime")
    ended = sorted(pods, key=_when)
    if "Complete" in conds or "SuccessCriteriaMet" in conds:
        summary: Mapping[str, Any] = {}
        for pod in reversed(ended):
            if (pod.get("status") or {}).get("phase") != "Succeeded":
                continue
            try:
                doc = json.loads(_terminated(pod).get("message") or "")
            except ValueError:
                continue
            if isinstance(doc, dict):
                summary = doc
                break
        completed = status.get("completionTime") or (_when(ended[-1]) if ended else None)
        return JobOutcome("Succeeded", started, completed, summary)
    if "Failed" in conds:
        last = ""
        for pod in reversed(ended):
            message = str(_terminated(pod).get("message") or "").strip()
            if message:
                last = message.splitlines()[-1][:500]
                break
        cond = conds["Failed"]
        why = f"{cond.get('reason', 'Failed')}: {cond.get('message', '')}".strip(": ")
        return JobOutcome(
            "Failed",
            started,
            cond.get("lastTransitionTime"),
            message=f"{why}; last error: {last}" if last else why,
        )
    return JobOutcome("Running", started)
