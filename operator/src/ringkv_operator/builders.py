"""Desired objects of a KVCluster: a `Cluster` goes in, plain dicts come out.

Like CloudNativePG's `pkg/specs`, these know nothing of the API server: the
reconciler compares what they build with what lives and patches only the
difference (`apply.py`). Two inputs are not in the spec, because they are
decisions of the rebalance and roll planner (`plan.py`): the StatefulSet's
replica count (it shrinks only after the data has moved) and its
rollingUpdate partition (lowered one pod at a time).

The pod template depends on the spec alone, never on `replicas`: a change of
template restarts every pod, and scaling must not. That is why every pod gets
the same `RINGKV_PEERS`, the first N pods (N is immutable), and why a pod's
zone reaches the ring through the operator instead of the template.
Pure: no kopf, no kubernetes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ringkv_operator.model import (
    API_VERSION,
    DATA_DIR,
    KIND,
    NODE_PORT,
    Cluster,
    parse_quantity,
    quorum,
)

__all__ = [
    "SHUTDOWN_TIMEOUT_S",
    "TERMINATION_GRACE_S",
    "auth_secret",
    "client_service",
    "container_security_context",
    "map_size",
    "max_unavailable",
    "network_policy",
    "node_env",
    "owner_reference",
    "pdb",
    "peers_service",
    "pod_security_context",
    "seeds",
    "statefulset",
]

# The node drains requests for this long on SIGTERM, then checkpoints; the
# kubelet waits the grace period before it kills, so the grace period is longer.
SHUTDOWN_TIMEOUT_S = 15
TERMINATION_GRACE_S = 60
PRE_STOP_SLEEP_S = 3  # lets kube-proxy and the endpoints drop the pod before it stops
STARTUP_PROBE_S = 1800  # a long write-ahead log replay still fits
NODE_UID = 10001


def owner_reference(cluster: Cluster) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": cluster.name,
        "uid": cluster.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(cluster: Cluster, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": cluster.namespace,
        "labels": dict(cluster.labels),
        "ownerReferences": [owner_reference(cluster)],
        **extra,
    }


def seeds(cluster: Cluster) -> str:
    """`RINGKV_PEERS`: the first N pods, the members of the epoch-1 ring.

    A pod past them starts owning nothing, takes the ring from a seed, and gets
    partitions by a rebalance (design §7.6).
    """
    return ",".join(
        f"{cluster.pod(i)}={cluster.pod_url(i)}" for i in range(cluster.spec.replication_factor)
    )


def map_size(cluster: Cluster) -> int:
    """LMDB's map: 80% of the claim, the rest for the write-ahead log and checkpoints."""
    size = parse_quantity(cluster.spec.storage_size)
    return max(64 << 20, size * 4 // 5 // 4096 * 4096)


def node_env(cluster: Cluster) -> list[dict[str, Any]]:
    """The node's settings (design §3a); the token comes from the Secret, never argv."""
    spec = cluster.spec
    own: list[dict[str, Any]] = [
        {"name": "RINGKV_NODE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "RINGKV_LISTEN", "value": f"0.0.0.0:{NODE_PORT}"},
        {
            "name": "RINGKV_ADVERTISE_URL",
            "value": f"http://$(RINGKV_NODE_ID).{cluster.peers_service}.{cluster.namespace}.svc"
            f":{NODE_PORT}",
        },
        {"name": "RINGKV_DATA_DIR", "value": DATA_DIR},
        {"name": "RINGKV_PEERS", "value": seeds(cluster)},
        {"name": "RINGKV_REPLICATION_FACTOR", "value": str(spec.replication_factor)},
        {"name": "RINGKV_PARTITIONS", "value": str(spec.partitions)},
        {"name": "RINGKV_DURABILITY", "value": spec.durability},
        {"name": "RINGKV_READ_CONSISTENCY", "value": spec.read_consistency},
        {"name": "RINGKV_WRITE_CONSISTENCY", "value": spec.write_consistency},
        {"name": "RINGKV_MAP_SIZE", "value": str(map_size(cluster))},
        {"name": "RINGKV_DATA_AUTH", "value": "on"},
        {"name": "RINGKV_SHUTDOWN_TIMEOUT", "value": f"{SHUTDOWN_TIMEOUT_S}s"},
        {
            "name": "RINGKV_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": cluster.secret, "key": "token"}},
        },
    ]
    users = {str(e["name"]): dict(e) for e in spec.env}
    merged = [users.pop(e["name"], e) for e in own]
    return merged + list(users.values())


def _probe(path: str, period: int, failures: int, timeout: int = 2) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def pod_security_context() -> dict[str, Any]:
    """Non-root (uid 10001, the image's user), fsGroup for the volumes, seccomp."""
    return {
        "runAsNonRoot": True,
        "runAsUser": NODE_UID,
        "runAsGroup": NODE_UID,
        "fsGroup": NODE_UID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """A read-only root filesystem, no privilege escalation, every capability dropped."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_spec(cluster: Cluster, image: str) -> dict[str, Any]:
    spec = cluster.spec
    match = {"matchLabels": dict(cluster.selector)}
    pod: dict[str, Any] = {
        "enableServiceLinks": False,  # a Service named `ringkv` would set RINGKV_* variables
        "automountServiceAccountToken": False,  # nodes never call the API server
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "securityContext": pod_security_context(),
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": match,
                        },
                    }
                ]
            }
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": spec.zone_key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": match,
            }
        ],
        "containers": [
            {
                "name": "node",
                "image": image,
                "imagePullPolicy": spec.image_pull_policy,
                "ports": [{"name": "http", "containerPort": NODE_PORT, "protocol": "TCP"}],
                "env": node_env(cluster),
                "resources": dict(spec.resources),
                "volumeMounts": [
                    {"name": "data", "mountPath": DATA_DIR},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
                "startupProbe": _probe("/healthz", 5, STARTUP_PROBE_S // 5),
                "readinessProbe": _probe("/readyz", 5, 2),
                "livenessProbe": _probe("/healthz", 10, 6, timeout=5),
                "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_S}}},
                "securityContext": container_security_context(),
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    # None, not absent: the pod spec is ours whole, so a field removed from the
    # KVCluster is removed from the template too (apply.REPLACE).
    pod["nodeSelector"] = dict(spec.node_selector) or None
    pod["tolerations"] = [dict(t) for t in spec.tolerations] or None
    pod["priorityClassName"] = spec.priority_class
    return pod


def statefulset(cluster: Cluster, *, image: str, replicas: int, partition: int) -> dict[str, Any]:
    """The StatefulSet; `replicas` and `partition` are the planner's."""
    spec = cluster.spec
    claim: dict[str, Any] = {
        "metadata": {"name": "data", "labels": dict(cluster.selector)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.storage_size}},
        },
    }
    if spec.storage_class:
        claim["spec"]["storageClassName"] = spec.storage_class
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(cluster, cluster.statefulset),
        "spec": {
            "replicas": replicas,
            "serviceName": cluster.peers_service,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": dict(cluster.selector)},
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"partition": partition},
            },
            "persistentVolumeClaimRetentionPolicy": {
                "whenScaled": spec.reclaim_policy,
                "whenDeleted": spec.reclaim_policy,
            },
            "template": {
                "metadata": {"labels": dict(cluster.labels)},
                "spec": _pod_spec(cluster, image),
            },
            "volumeClaimTemplates": [claim],
        },
    }


def _service(cluster: Cluster, name: str, headless: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": dict(cluster.selector),
        "ports": [{"name": "http", "port": NODE_PORT, "targetPort": "http", "protocol": "TCP"}],
    }
    if headless:
        # Pod DNS must resolve while a pod is not ready yet: peers and the
        # operator reach a starting node to give it its ring.
        spec.update(clusterIP="None", publishNotReadyAddresses=True)
    else:
        spec["type"] = "ClusterIP"
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(cluster, name), "spec": spec}


def peers_service(cluster: Cluster) -> dict[str, Any]:
    """`<name>-peers`: headless, for pod DNS `<name>-<i>.<name>-peers.<ns>.svc`."""
    return _service(cluster, cluster.peers_service, headless=True)


def client_service(cluster: Cluster) -> dict[str, Any]:
    """`<name>`: what clients use, `<name>.<ns>.svc:8080`; ready pods only."""
    return _service(cluster, cluster.client_service, headless=False)


def max_unavailable(n: int, read: str, write: str) -> int:
    """Pods that may be down at once while every partition still has the replicas
    reads and writes need: N minus the larger of R and W, and at least 1 (a budget
    of 0 would block every node drain; with `all` any pod down fails requests)."""
    return max(1, n - max(quorum(n, read), quorum(n, write)))


def pdb(cluster: Cluster) -> dict[str, Any]:
    spec = cluster.spec
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(cluster, cluster.pdb),
        "spec": {
            "maxUnavailable": max_unavailable(
                spec.replication_factor, spec.read_consistency, spec.write_consistency
            ),
            "selector": {"matchLabels": dict(cluster.selector)},
        },
    }


OPERATOR_NAME = "ringkv-operator"  # the operator pods' app.kubernetes.io/name


def network_policy(
    cluster: Cluster, operator_namespace: str, extra: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """Into the storage pods, only: their peers, the operator, and client pods labelled
    `ringkv.io/client: "true"` in the cluster's namespace (and `extra` peers)."""
    peers: list[dict[str, Any]] = [
        {"podSelector": {"matchLabels": dict(cluster.selector)}},
        {"podSelector": {"matchLabels": {"ringkv.io/client": "true"}}},
    ]
    if operator_namespace:
        peers.append(
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": operator_namespace}
                },
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": OPERATOR_NAME}},
            }
        )
    peers += [dict(p) for p in extra]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(cluster, cluster.name),
        "spec": {
            "podSelector": {"matchLabels": dict(cluster.selector)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"port": NODE_PORT, "protocol": "TCP"}]}],
        },
    }


def auth_secret(cluster: Cluster, token: str) -> dict[str, Any]:
    """The generated `<name>-auth`; created once, its token never rewritten."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(cluster, cluster.generated_secret),
        "type": "Opaque",
        "stringData": {"token": token},
    }
