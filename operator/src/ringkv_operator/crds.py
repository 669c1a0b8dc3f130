"""The CustomResourceDefinitions, as data: the one source of the CRD YAML.

`python -m ringkv_operator.crds` (what `make crds` runs) writes them to
`operator/crds/` and into the chart (`charts/ringkv/templates/crds.yaml`,
from which `manifests/` is rendered), and updates the field tables of
docs/operator.md; a test fails when a committed file differs. Every
field has a description (`kubectl explain kvc.spec.storage`), defaults come
from `model.ClusterSpec`, and what the schema cannot say is a CEL rule whose
message names the field. Pure: no kopf, no kubernetes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ringkv_operator.model import (
    BACKUP_KIND,
    BACKUP_PLURAL,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    ClusterSpec,
)

__all__ = ["kvbackup_crd", "kvcluster_crd", "render", "write"]

_D = ClusterSpec()
Schema = dict[str, Any]


def _obj(description: str, properties: dict[str, Schema], **extra: Any) -> Schema:
    return {"type": "object", "description": description, "properties": properties, **extra}


def _str(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def _int(description: str, **extra: Any) -> Schema:
    return {"type": "integer", "description": description, **extra}


def _bool(description: str, default: bool) -> Schema:
    return {"type": "boolean", "description": description, "default": default}


def _free(description: str, kind: str = "object") -> Schema:
    """A Kubernetes type we pass through as it is (validated where it lands)."""
    doc: Schema = {"type": kind, "description": description}
    if kind == "object":
        doc["x-kubernetes-preserve-unknown-fields"] = True
    else:
        doc["items"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return doc


_LEVEL = ["one", "quorum", "all"]
_POWERS_OF_TWO = [1 << i for i in range(17)]
_QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
# Pods are <name>-<i>, the headless Service <name>-peers, and the StatefulSet
# controller labels pods <name>-<10-char hash>: all must be DNS labels (63).
_NAME_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {
            "type": "string",
            "maxLength": 52,
            "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$",
        }
    },
}


def _destination(description: str) -> Schema:
    return _obj(
        description,
        {
            "pvc": _obj(
                "A PersistentVolumeClaim in the cluster's namespace; backups go under it. "
                "The backup Job mounts it (ReadWriteOnce: one Job at a time, on any node).",
                {
                    "claimName": _str("The claim's name.", minLength=1),
                    "path": _str("A directory inside the claim.", default=""),
                },
                required=["claimName"],
            ),
            "s3": _obj(
                "S3-compatible object storage.",
                {
                    "bucket": _str("The bucket.", minLength=1),
                    "prefix": _str("Key prefix of the backups in the bucket.", default=""),
                    "endpoint": _str("Endpoint URL (empty: AWS's own for the region)."),
                    "region": _str("Region.", default="us-east-1"),
                    "pathStyle": _bool("Address the bucket in the path, not the host.", False),
                    "secretName": _str("Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."),
                },
                required=["bucket"],
            ),
        },
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.pvc) != has(self.s3)",
                    "message": "destination must name exactly one of pvc or s3",
                }
            ]
        },
    )


def _s3_settings() -> Schema:
    return _obj(
        "S3 settings of an s3:// location (the bucket and prefix are in the location).",
        {
            "endpoint": _str("Endpoint URL (empty: AWS's own for the region)."),
            "region": _str("Region.", default="us-east-1"),
            "pathStyle": _bool("Address the bucket in the path, not the host.", False),
            "secretName": _str("Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."),
        },
    )


def _backup_policy() -> Schema:
    return _obj(
        "Scheduled backups: the operator creates a KVBackup at every time of `schedule` "
        "and prunes the old ones by `retention`, data included.",
        {
            "destination": _destination("Where the scheduled backups go."),
            "schedule": _str(
                "A cron expression (UTC), such as `0 2 * * *` for 02:00 every night. "
                "Empty: no scheduled backups.",
                minLength=1,
            ),
            "suspend": _bool("Create no scheduled backups while true.", False),
            "verify": _str(
                "none, or restore: a restore drill after every scheduled backup.",
                enum=["none", "restore"],
                default="none",
            ),
            "retention": _obj(
                "Which scheduled backups to keep; every other completed one is deleted, "
                "its data first. A backup is kept when any rule keeps it; days, weeks and "
                "months without a backup do not count. Absent: keep all.",
                {
                    "keepLast": _int("The newest N backups.", minimum=0),
                    "keepDaily": _int(
                        "The newest backup of each of the last N days (UTC) that have one.",
                        minimum=0,
                    ),
                    "keepWeekly": _int("The newest of each of the last N ISO weeks.", minimum=0),
                    "keepMonthly": _int("The newest of each of the last N months.", minimum=0),
                },
                **{
                    "x-kubernetes-validations": [
                        {
                            "rule": "(has(self.keepLast) && self.keepLast > 0) || "
                            "(has(self.keepDaily) && self.keepDaily > 0) || "
                            "(has(self.keepWeekly) && self.keepWeekly > 0) || "
                            "(has(self.keepMonthly) && self.keepMonthly > 0)",
                            "message": "retention must keep something: set keepLast, "
                            "keepDaily, keepWeekly or keepMonthly to 1 or more",
                        }
                    ]
                },
            ),
        },
        required=["destination"],
    )


def _bootstrap() -> Schema:
    return _obj(
        "How a new cluster starts. Fixed when the cluster is created.",
        {
            "fromBackup": _obj(
                "Restore a backup into the new cluster (of any size, Q or N) before it is Ready.",
                {
                    "name": _str("A completed KVBackup in this namespace.", minLength=1),
                    "location": _str(
                        "A backup's location, as a KVBackup's status.location gives it: "
                        "pvc://<claim>/<backup id> or s3://<bucket>/<prefix>/<backup id>. "
                        "Without the id: the newest backup there.",
                        pattern=r"^(pvc|s3)://[^/]+(/.*)?$",
                    ),
                    "s3": _s3_settings(),
                },
                **{
                    "x-kubernetes-validations": [
                        {
                            "rule": "has(self.name) != has(self.location)",
                            "message": "fromBackup must give exactly one of name or location",
                        }
                    ]
                },
            )
        },
        **{
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "bootstrap is immutable"}
            ]
        },
    )


def _kvcluster_spec() -> Schema:
    return _obj(
        "The desired state of a ringkv cluster. The operator never writes it.",
        {
            "replicas": _int(
                "Storage pods. Scaling moves data onto new pods, or off removed pods before "
                "they go.",
                minimum=1,
                maximum=1000,
                default=_D.replicas,
            ),
            "replicationFactor": _int(
                "N: copies of every key, each on another pod (and zone where it can). "
                "At most `replicas`; fixed when the cluster is created.",
                minimum=1,
                maximum=7,
                default=_D.replication_factor,
                **{
                    "x-kubernetes-validations": [
                        {"rule": "self == oldSelf", "message": "replicationFactor is immutable"}
                    ]
                },
            ),
            "partitions": _int(
                "Q: the hash ring's partitions, a power of two; fixed when the cluster is created.",
                enum=_POWERS_OF_TWO,
                default=_D.partitions,
                **{
                    "x-kubernetes-validations": [
                        {"rule": "self == oldSelf", "message": "partitions is immutable"}
                    ]
                },
            ),
            "image": _str(
                "The ringkv-node image. Empty: the operator's default (its --node-image), so "
                "that upgrading the operator upgrades such clusters. A change rolls the pods "
                "one at a time."
            ),
            "imagePullPolicy": _str(
                "The node container's image pull policy.",
                enum=["Always", "IfNotPresent", "Never"],
                default=_D.image_pull_policy,
            ),
            "storage": _obj(
                "Each pod's PersistentVolumeClaim.",
                {
                    "size": _str(
                        "Requested size. May grow (the claims are expanded where the "
                        "StorageClass allows it), never shrink.",
                        pattern=_QUANTITY_PATTERN,
                        default=_D.storage_size,
                    ),
                    "storageClassName": _str(
                        "The StorageClass; empty: the cluster's default.", nullable=True
                    ),
                    "reclaimPolicy": _str(
                        "What happens to the claim of a pod removed by a scale down, and to "
                        "every claim when the KVCluster is deleted: Retain keeps it, Delete "
                        "deletes it.",
                        enum=["Retain", "Delete"],
                        default=_D.reclaim_policy,
                    ),
                },
                default={},
                **{
                    "x-kubernetes-validations": [
                        {
                            "rule": "!has(oldSelf.size) || !has(self.size) || "
                            "quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",
                            "message": "storage.size may grow but not shrink",
                            "fieldPath": ".size",
                        }
                    ]
                },
            ),
            "resources": _free("The node container's resources (requests and limits)."),
            "consistency": _obj(
                "Default consistency levels of requests that name none.",
                {
                    "read": _str(
                        "Replicas a read asks: one, quorum or all.",
                        enum=_LEVEL,
                        default=_D.read_consistency,
                    ),
                    "write": _str(
                        "Replicas that acknowledge a write: one, quorum or all.",
                        enum=_LEVEL,
                        default=_D.write_consistency,
                    ),
                },
                default={},
            ),
            "durability": _str(
                "fsync: a write is acknowledged once it is on disk. async: once the kernel "
                "has it (survives a pod crash, not a machine's power loss).",
                enum=["fsync", "async"],
                default=_D.durability,
            ),
            "auth": _obj(
                "The cluster token, which clients and nodes present as a Bearer token.",
                {
                    "secretName": _str(
                        "A Secret in this namespace whose `token` key is the token. Empty: "
                        "the operator generates `<name>-auth`.",
                        nullable=True,
                    )
                },
                default={},
            ),
            "zones": _obj(
                "Spreading replicas over failure domains.",
                {
                    "topologyKey": _str(
                        "The node label naming a pod's zone: pods spread over its values, "
                        "and the N replicas of a partition go to distinct zones where they "
                        "can.",
                        default=_D.zone_key,
                    )
                },
                default={},
            ),
            "scheduling": _obj(
                "Where the storage pods may run.",
                {
                    "nodeSelector": {
                        "type": "object",
                        "description": "Node labels the pods require.",
                        "additionalProperties": {"type": "string"},
                    },
                    "tolerations": _free("Tolerations of the pods.", "array"),
                    "priorityClassName": _str("The pods' PriorityClass.", nullable=True),
                },
                default={},
            ),
            "env": _free(
                "Extra environment variables of the node container (RINGKV_* settings of "
                "docs/design.md §3a, §7.3); they win over the operator's own.",
                "array",
            ),
            "paused": _bool(
                "Stop reconciling this cluster (maintenance): nothing is created, changed or "
                "rebalanced until it is false again.",
                _D.paused,
            ),
            "pdb": _obj(
                "The PodDisruptionBudget (maxUnavailable from N and the consistency levels).",
                {"enabled": _bool("Create it.", _D.pdb_enabled)},
                default={},
            ),
            "backup": _backup_policy(),
            "bootstrap": _bootstrap(),
        },
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "self.replicationFactor <= self.replicas",
                    "message": "replicationFactor must not exceed replicas",
                    "fieldPath": ".replicationFactor",
                },
                {
                    "rule": "has(self.bootstrap) == has(oldSelf.bootstrap)",
                    "message": "bootstrap is set when the cluster is created, never after",
                    "fieldPath": ".bootstrap",
                },
            ]
        },
    )


def _condition_list() -> Schema:
    return {
        "type": "array",
        "description": "Ready, Progressing, Degraded and Rebalancing, as Kubernetes conditions.",
        "items": _obj(
            "A condition.",
            {
                "type": _str("Its type."),
                "status": _str("True, False or Unknown.", enum=["True", "False", "Unknown"]),
                "reason": _str("A CamelCase reason."),
                "message": _str("For people."),
                "lastTransitionTime": _str("When status last changed.", format="date-time"),
                "observedGeneration": _int("The spec generation it was set for."),
            },
            required=["type", "status"],
        ),
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    }


def _kvcluster_status() -> Schema:
    return _obj(
        "What the operator observed and did. Only the operator writes it.",
        {
            "phase": _str(
                "Pending, Restoring, Ready, Scaling, Rebalancing, Upgrading, Degraded, Paused "
                "or Failed."
            ),
            "phaseSince": _str("When the phase last changed.", format="date-time"),
            "message": _str("What the operator does or waits for now."),
            "replicas": _int("Storage pods that exist (the scale subresource reads it)."),
            "readyReplicas": _int("Storage pods that are Ready."),
            "selector": _str("The pods' label selector (for the scale subresource)."),
            "ringEpoch": _int("The committed ring's epoch: it grows by one per rebalance."),
            "members": _int("Members of the committed ring."),
            "image": _str("The node image the pods run or roll to."),
            "observedGeneration": _int("The spec generation this status describes."),
            "rebalance": _obj(
                "The membership change in progress, or the last one.",
                {
                    "state": _str("Joining, Streaming, Committing, Draining or Done."),
                    "fromEpoch": _int("Epoch of the ring before."),
                    "toEpoch": _int("Epoch of the ring after."),
                    "fromMembers": _int("Members before."),
                    "toMembers": _int("Members after."),
                    "partitionsMoved": _int("Partition copies streamed so far."),
                    "partitionsTotal": _int("Partition copies to stream."),
                    "startedAt": _str("When it started.", format="date-time"),
                    "completedAt": _str("When the ring was committed.", format="date-time"),
                },
            ),
            "upgrade": _obj(
                "The rolling update in progress, or the last one.",
                {
                    "revision": _str("The StatefulSet revision pods roll to."),
                    "updated": _int("Pods at that revision."),
                    "partition": _int("The StatefulSet's rollingUpdate partition."),
                },
            ),
            "convergence": _obj(
                "Summed from the nodes' /v1/status.",
                {
                    "hintBacklog": _int("Hinted writes waiting for their replica."),
                    "partitionsOutOfSync": _int(
                        "Partitions whose replicas differed in the nodes' last anti-entropy rounds."
                    ),
                    "lastAntiEntropy": _str(
                        "When the least recent node finished its last anti-entropy round.",
                        format="date-time",
                    ),
                },
            ),
            "nodes": {
                "type": "array",
                "description": "Every storage pod as its node reports itself.",
                "items": _obj(
                    "One pod.",
                    {
                        "pod": _str("The pod."),
                        "ready": {"type": "boolean", "description": "The pod is Ready."},
                        "unreachable": {
                            "type": "boolean",
                            "description": "Its node did not answer the operator.",
                        },
                        "zone": _str("Its zone (the Node's zones.topologyKey label)."),
                        "epoch": _int("The ring epoch it holds."),
                        "partitions": _int("Partitions it owns."),
                        "hintBacklog": _int("Hinted writes it holds for others."),
                        "partitionsOutOfSync": _int(
                            "Partitions its last anti-entropy round found differing."
                        ),
                        "usedBytes": _int("Bytes its store uses on its volume."),
                    },
                ),
            },
            "lastBackup": _obj(
                "The last completed KVBackup.",
                {
                    "name": _str("The KVBackup."),
                    "completedAt": _str("When it completed.", format="date-time"),
                    "location": _str("Where it is."),
                },
            ),
            "backup": _obj(
                "The backup schedule and retention.",
                {
                    "lastScheduleTime": _str(
                        "The schedule time of the last KVBackup it created.", format="date-time"
                    ),
                    "nextScheduleTime": _str("When it creates the next.", format="date-time"),
                    "pruning": {
                        "type": "array",
                        "description": "KVBackups whose data retention is deleting now.",
                        "items": {"type": "string"},
                    },
                },
            ),
            "restore": _obj(
                "The restore of spec.bootstrap.fromBackup.",
                {
                    "phase": _str("Waiting, Running, Completed or Failed."),
                    "source": _str("The backup's location."),
                    "job": _str("The restore Job."),
                    "startedAt": _str("When the Job started.", format="date-time"),
                    "completedAt": _str("When it completed.", format="date-time"),
                    "records": _int("Records read from the backup."),
                    "written": _int("Records written into the cluster."),
                    "message": _str("For people."),
                },
            ),
            "conditions": _condition_list(),
        },
    )


def _crd(
    plural: str,
    kind: str,
    short: str,
    spec: Schema,
    status: Schema,
    columns: list[dict[str, Any]],
    subresources: dict[str, Any],
    metadata: Schema,
) -> dict[str, Any]:
    schema: Schema = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": metadata,
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "ringkv", "app.kubernetes.io/part-of": "ringkv"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": plural,
                "singular": kind.lower(),
                "kind": kind,
                "listKind": f"{kind}List",
                "shortNames": [short],
                "categories": ["ringkv"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def _column(name: str, kind: str, path: str, description: str = "") -> dict[str, Any]:
    col = {"name": name, "type": kind, "jsonPath": path}
    if description:
        col["description"] = description
    return col


def kvcluster_crd() -> dict[str, Any]:
    return _crd(
        PLURAL,
        KIND,
        "kvc",
        _kvcluster_spec(),
        _kvcluster_status(),
        [
            _column("Replicas", "integer", ".spec.replicas", "Desired storage pods"),
            _column("Ready", "integer", ".status.readyReplicas", "Ready storage pods"),
            _column("Phase", "string", ".status.phase"),
            _column("Epoch", "integer", ".status.ringEpoch", "Committed ring epoch"),
            _column("LastBackup", "date", ".status.lastBackup.completedAt"),
            _column("Age", "date", ".metadata.creationTimestamp"),
        ],
        {
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            },
        },
        _NAME_SCHEMA,
    )


def kvbackup_crd() -> dict[str, Any]:
    spec = _obj(
        "A backup of one KVCluster in this namespace.",
        {
            "cluster": _str("The KVCluster to back up.", minLength=1),
            "destination": _destination("Where the backup goes."),
            "verify": _str(
                "none, or restore: restore the backup into a throw-away store and compare it "
                "with its manifest.",
                enum=["none", "restore"],
                default="none",
            ),
        },
        required=["cluster", "destination"],
        **{
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "a KVBackup's spec is immutable"}
            ]
        },
    )
    status = _obj(
        "What the backup did.",
        {
            "phase": _str("Pending, Running, Completed or Failed."),
            "message": _str("For people."),
            "startedAt": _str("When it started.", format="date-time"),
            "completedAt": _str("When it completed.", format="date-time"),
            "location": _str("Where its manifest is."),
            "sizeBytes": _int("Bytes written."),
            "keys": _int("Records in it."),
            "partitions": _int("Partitions in it."),
            "verified": _str("The restore drill's result, when one ran."),
            "job": _str("The Job that runs the backup."),
            "ringEpoch": _int("The ring epoch the backup read."),
            "conditions": _condition_list(),
        },
    )
    return _crd(
        BACKUP_PLURAL,
        BACKUP_KIND,
        "kvb",
        spec,
        status,
        [
            _column("Cluster", "string", ".spec.cluster"),
            _column("Phase", "string", ".status.phase"),
            _column("Keys", "integer", ".status.keys"),
            _column("Size", "integer", ".status.sizeBytes"),
            _column("Completed", "date", ".status.completedAt"),
            _column("Age", "date", ".metadata.creationTimestamp"),
        ],
        {"status": {}},
        {"type": "object"},
    )


def all_crds() -> list[dict[str, Any]]:
    return [kvcluster_crd(), kvbackup_crd()]


def _rows(schema: Schema, path: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for key, sub in (schema.get("properties") or {}).items():
        here = f"{path}.{key}"
        kind = str(sub.get("type", ""))
        if "enum" in sub and len(sub["enum"]) <= 6:
            kind += " (" + " \\| ".join(str(v) for v in sub["enum"]) + ")"
        default = sub.get("default")
        shown = "" if default is None or default == {} else f"`{json.dumps(default)}`"
        rows.append((here, kind, shown, str(sub.get("description", ""))))
        rows += _rows(sub, here)
        if isinstance(sub.get("items"), dict) and sub["items"].get("properties"):
            rows += _rows(sub["items"], here + "[]")
    return rows


def reference(crd: dict[str, Any]) -> str:
    """A Markdown table of every field of `crd` (docs/operator.md embeds it)."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for section in ("spec", "status"):
        for path, kind, default, text in _rows(schema["properties"][section], section):
            lines.append(f"| `{path}` | {kind} | {default} | {text} |")
    return "\n".join(lines) + "\n"


HEADER = "# Generated by `make crds` from operator/src/ringkv_operator/crds.py: do not edit.\n"


def render(crd: dict[str, Any]) -> str:
    return HEADER + str(yaml.safe_dump(crd, sort_keys=False, width=100, allow_unicode=True))


def files() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    return {f"{c['spec']['names']['plural']}.yaml": render(c) for c in all_crds()}


def write(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files().items():
        (directory / name).write_text(text)


def embed(text: str) -> str:
    """`text` (docs/operator.md) with its generated field references brought up to date."""
    for crd in all_crds():
        kind = crd["spec"]["names"]["kind"]
        begin, end = f"<!-- BEGIN {kind} fields -->\n", f"<!-- END {kind} fields -->"
        head, found, rest = text.partition(begin)
        if not found:
            continue
        _, found, tail = rest.partition(end)
        if found:
            text = head + begin + reference(crd) + end + tail
    return text


def chart_template() -> str:
    """charts/ringkv/templates/crds.yaml: the CRDs behind `crds.create`, kept on uninstall.

    In templates/, not Helm's crds/ folder, so that `helm upgrade` upgrades them
    (Helm never touches crds/ after the first install), as cloudnative-pg does.
    """
    docs = []
    for crd in all_crds():
        kept = {**crd, "metadata": {**crd["metadata"]}}
        kept["metadata"]["annotations"] = {"helm.sh/resource-policy": "keep"}
        docs.append(yaml.safe_dump(kept, sort_keys=False, width=100, allow_unicode=True))
    head = "{{/* " + HEADER.removeprefix("# ").rstrip()
    return head + " */}}\n{{- if .Values.crds.create }}\n" + "---\n".join(docs) + "{{- end }}\n"


ROOT_FILES = {
    "crds": Path("operator/crds"),
    "chart": Path("charts/ringkv/templates/crds.yaml"),
    "docs": Path("docs/operator.md"),
}


if __name__ == "__main__":
    # From the repository's root: every file generated from this module.
    write(ROOT_FILES["crds"])
    ROOT_FILES["chart"].write_text(chart_template())
    ROOT_FILES["docs"].write_text(embed(ROOT_FILES["docs"].read_text()))
