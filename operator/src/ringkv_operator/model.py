"""A KVCluster as the operator sees it: the spec with its defaults, and the names it owns.

The API server applies the CRD's defaults and validation before an object is
stored, so a KVCluster read back is already whole; `parse_spec` still fills
every default itself, so that the builders work on any dict (one stored under
an older CRD, or a unit test's). The defaults live once, in `ClusterSpec`:
`crds.py` writes them into the CRD schema. Pure: no kopf, no kubernetes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "MANAGED_BY",
    "PLURAL",
    "VERSION",
    "Cluster",
    "ClusterSpec",
    "SpecError",
    "parse_cluster",
    "parse_quantity",
]

GROUP = "ringkv.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "KVCluster"
PLURAL = "kvclusters"
BACKUP_KIND = "KVBackup"
BACKUP_PLURAL = "kvbackups"
MANAGED_BY = "ringkv-operator"
NODE_PORT = 8080
DATA_DIR = "/data"


class SpecError(ValueError):
    """A KVCluster the operator cannot act on; the message names the field."""


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    replicas: int = 3
    replication_factor: int = 3
    partitions: int = 256
    image: str = ""  # empty: the operator's default node image
    image_pull_policy: str = "IfNotPresent"
    storage_size: str = "1Gi"
    storage_class: str | None = None
    reclaim_policy: str = "Retain"
    resources: Mapping[str, Any] = field(default_factory=dict)
    read_consistency: str = "quorum"
    write_consistency: str = "quorum"
    durability: str = "fsync"
    auth_secret: str | None = None
    zone_key: str = "topology.kubernetes.io/zone"
    paused: bool = False
    pdb_enabled: bool = True
    env: tuple[Mapping[str, Any], ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    priority_class: str | None = None


@dataclass(frozen=True, slots=True)
class Cluster:
    """One KVCluster: identity, generation and spec, and the names of what it owns."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: ClusterSpec

    @property
    def statefulset(self) -> str:
        return self.name

    @property
    def peers_service(self) -> str:
        return f"{self.name}-peers"

    @property
    def client_service(self) -> str:
        return self.name

    @property
    def pdb(self) -> str:
        return self.name

    @property
    def generated_secret(self) -> str:
        return f"{self.name}-auth"

    @property
    def secret(self) -> str:
        """The Secret whose `token` key is the cluster token."""
        return self.spec.auth_secret or self.generated_secret

    def pod(self, ordinal: int) -> str:
        return f"{self.name}-{ordinal}"

    def pvc(self, ordinal: int) -> str:
        return f"data-{self.name}-{ordinal}"

    def ordinal(self, pod_name: str) -> int | None:
        """The ordinal of one of this cluster's pods, or None for another name."""
        prefix = f"{self.name}-"
        if not pod_name.startswith(prefix) or not pod_name[len(prefix) :].isdigit():
            return None
        return int(pod_name[len(prefix) :])

    def pod_dns(self, ordinal: int) -> str:
        return f"{self.pod(ordinal)}.{self.peers_service}.{self.namespace}.svc"

    def pod_url(self, ordinal: int) -> str:
        return f"http://{self.pod_dns(ordinal)}:{NODE_PORT}"

    @property
    def client_url(self) -> str:
        return f"http://{self.client_service}.{self.namespace}.svc:{NODE_PORT}"

    @property
    def selector(self) -> dict[str, str]:
        """The pods' selector: immutable in a StatefulSet, so never widened."""
        return {
            "app.kubernetes.io/name": "ringkv",
            "app.kubernetes.io/instance": self.name,
            "app.kubernetes.io/component": "storage",
        }

    @property
    def labels(self) -> dict[str, str]:
        return {
            **self.selector,
            "app.kubernetes.io/managed-by": MANAGED_BY,
            "app.kubernetes.io/part-of": "ringkv",
        }


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_UNITS = {
    "": 1,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "Pi": 1 << 50,
    "Ei": 1 << 60,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}


def parse_quantity(text: str) -> int:
    """Bytes in a Kubernetes storage quantity (`1Gi`, `500M`, `1073741824`)."""
    m = _QUANTITY.match(str(text).strip())
    if not m:
        raise SpecError(f"{text!r} is not a storage quantity (like 1Gi or 500Mi)")
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


def _get(doc: Mapping[str, Any], key: str, default: Any) -> Any:
    value = doc.get(key)
    return default if value is None else value


def _int(doc: Mapping[str, Any], key: str, default: int, path: str, minimum: int) -> int:
    value = _get(doc, key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{path}: must be an integer >= {minimum}, not {value!r}")
    return value


def _choice(doc: Mapping[str, Any], key: str, default: str, path: str, allowed: set[str]) -> str:
    value = _get(doc, key, default)
    if value not in allowed:
        raise SpecError(f"{path}: must be one of {', '.join(sorted(allowed))}, not {value!r}")
    return str(value)


def _section(doc: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = _get(doc, key, {})
    if not isinstance(value, Mapping):
        raise SpecError(f"{path}: must be an object")
    return value


_LEVELS = {"one", "quorum", "all"}
_D = ClusterSpec()


def parse_spec(spec: Mapping[str, Any]) -> ClusterSpec:
    """A validated `ClusterSpec` (defaults filled) from a KVCluster's `spec`."""
    storage = _section(spec, "storage", "spec.storage")
    consistency = _section(spec, "consistency", "spec.consistency")
    auth = _section(spec, "auth", "spec.auth")
    zones = _section(spec, "zones", "spec.zones")
    pdb = _section(spec, "pdb", "spec.pdb")
    scheduling = _section(spec, "scheduling", "spec.scheduling")
    replicas = _int(spec, "replicas", _D.replicas, "spec.replicas", 1)
    n = _int(spec, "replicationFactor", _D.replication_factor, "spec.replicationFactor", 1)
    if n > replicas:
        raise SpecError(f"spec.replicationFactor: {n} exceeds spec.replicas ({replicas})")
    partitions = _int(spec, "partitions", _D.partitions, "spec.partitions", 1)
    if partitions & (partitions - 1) or partitions > 65536:
        raise SpecError(f"spec.partitions: must be a power of two up to 65536, not {partitions}")
    size = str(_get(storage, "size", _D.storage_size))
    parse_quantity(size)
    env = _get(spec, "env", [])
    tolerations = _get(scheduling, "tolerations", [])
    if not isinstance(env, list) or not all(isinstance(e, Mapping) and "name" in e for e in env):
        raise SpecError("spec.env: must be a list of {name, value|valueFrom}")
    if not isinstance(tolerations, list):
        raise SpecError("spec.scheduling.tolerations: must be a list")
    return ClusterSpec(
        replicas=replicas,
        replication_factor=n,
        partitions=partitions,
        image=str(_get(spec, "image", "")),
        image_pull_policy=_choice(
            spec,
            "imagePullPolicy",
            _D.image_pull_policy,
            "spec.imagePullPolicy",
            {"Always", "IfNotPresent", "Never"},
        ),
        storage_size=size,
        storage_class=storage.get("storageClassName"),
        reclaim_policy=_choice(
            storage,
            "reclaimPolicy",
            _D.reclaim_policy,
            "spec.storage.reclaimPolicy",
            {"Retain", "Delete"},
        ),
        resources=dict(_section(spec, "resources", "spec.resources")),
        read_consistency=_choice(
            consistency, "read", _D.read_consistency, "spec.consistency.read", _LEVELS
        ),
        write_consistency=_choice(
            consistency, "write", _D.write_consistency, "spec.consistency.write", _LEVELS
        ),
        durability=_choice(
            spec, "durability", _D.durability, "spec.durability", {"fsync", "async"}
        ),
        auth_secret=auth.get("secretName") or None,
        zone_key=str(_get(zones, "topologyKey", _D.zone_key)),
        paused=bool(_get(spec, "paused", _D.paused)),
        pdb_enabled=bool(_get(pdb, "enabled", _D.pdb_enabled)),
        env=tuple(env),
        node_selector=dict(_section(scheduling, "nodeSelector", "spec.scheduling.nodeSelector")),
        tolerations=tuple(tolerations),
        priority_class=scheduling.get("priorityClassName") or None,
    )


def parse_cluster(body: Mapping[str, Any]) -> Cluster:
    """A `Cluster` from a KVCluster object as the API server returns it."""
    meta = body.get("metadata") or {}
    return Cluster(
        name=str(meta["name"]),
        namespace=str(meta.get("namespace") or "default"),
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        spec=parse_spec(body.get("spec") or {}),
    )


def quorum(n: int, level: str) -> int:
    """Replicas a `level` request needs out of N (as the node counts them)."""
    return {"one": 1, "quorum": n // 2 + 1, "all": n}[level]
