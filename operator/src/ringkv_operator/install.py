"""The plain install manifests (`kubectl apply -f manifests/`): CRDs, RBAC, the operator.

`python -m ringkv_operator.install manifests` (what `make manifests` runs)
writes them; a test fails when the committed files differ. The RBAC rules
are the calls the operator makes, verb by verb, and nothing more:

- KVClusters: watch (kopf), read, and patch (kopf's finalizer) and their status;
- the objects it owns: StatefulSets, Services, Secrets, PodDisruptionBudgets:
  read, create, patch; PDBs also delete (`spec.pdb.enabled: false`);
- pods: watch (they wake the reconcile loop) and list; PVCs: list, patch (expansion);
- StorageClasses and Nodes: get (expansion support, zones);
- Events: create; kopf watches CRDs and namespaces to follow them;
- its leader Lease, in its own namespace only.
Pure: no kopf, no kubernetes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from ringkv_operator import __version__, crds
from ringkv_operator.model import BACKUP_PLURAL, GROUP, PLURAL

__all__ = ["CLUSTER_RULES", "LEASE_RULES", "manifests", "write"]

NAMESPACE = "ringkv-system"
NAME = "ringkv-operator"
IMAGE = f"ringkv/operator:{__version__.split('.dev')[0]}"
NODE_IMAGE = f"ringkv/node:{__version__.split('.dev')[0]}"


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


CLUSTER_RULES = [
    _rule([GROUP], [PLURAL], ["get", "list", "watch", "patch"]),
    _rule([GROUP], [f"{PLURAL}/status"], ["get", "patch"]),
    _rule([GROUP], [BACKUP_PLURAL], ["get", "list", "watch"]),
    _rule(["apps"], ["statefulsets"], ["get", "list", "watch", "create", "patch"]),
    _rule([""], ["services", "secrets"], ["get", "create", "patch"]),
    _rule(["policy"], ["poddisruptionbudgets"], ["get", "create", "patch", "delete"]),
    _rule(["networking.k8s.io"], ["networkpolicies"], ["get", "create", "patch", "delete"]),
    _rule([""], ["pods"], ["list", "watch"]),
    _rule([""], ["persistentvolumeclaims"], ["list", "patch"]),
    _rule(["storage.k8s.io"], ["storageclasses"], ["get"]),
    _rule([""], ["nodes"], ["get"]),
    _rule([""], ["events"], ["create"]),
    _rule(["events.k8s.io"], ["events"], ["create"]),
    _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], ["list", "watch"]),
    _rule([""], ["namespaces"], ["list", "watch"]),
]
LEASE_RULES = [_rule(["coordination.k8s.io"], ["leases"], ["get", "create", "update"])]

_LABELS = {
    "app.kubernetes.io/name": NAME,
    "app.kubernetes.io/part-of": "ringkv",
    "app.kubernetes.io/component": "operator",
}


def _meta(name: str, namespace: str | None = NAMESPACE) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(_LABELS)}
    if namespace:
        meta["namespace"] = namespace
    return meta


def deployment(image: str = IMAGE, node_image: str = NODE_IMAGE) -> dict[str, Any]:
    select = {"app.kubernetes.io/name": NAME}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(NAME),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": select},
            # One leader at a time (a Lease): a second replica only waits.
            "strategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": dict(_LABELS)},
                "spec": {
                    "serviceAccountName": NAME,
                    "terminationGracePeriodSeconds": 60,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "operator",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "env": [
                                {"name": "RINGKV_OPERATOR_NODE_IMAGE", "value": node_image},
                                {"name": "RINGKV_OPERATOR_LOG_FORMAT", "value": "plain"},
                                {
                                    "name": "POD_NAMESPACE",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                                },
                            ],
                            "ports": [
                                {"name": "health", "containerPort": 8081},
                                {"name": "metrics", "containerPort": 8082},
                            ],
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": "health"},
                                "periodSeconds": 10,
                                "failureThreshold": 3,
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": "health"},
                                "periodSeconds": 5,
                            },
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "128Mi"},
                                "limits": {"memory": "512Mi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "runAsNonRoot": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def rbac() -> list[dict[str, Any]]:
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(NAME, None),
            "rules": CLUSTER_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(NAME, None),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": NAME,
            },
            "subjects": subject,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(f"{NAME}-leader"),
            "rules": LEASE_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(f"{NAME}-leader"),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": f"{NAME}-leader",
            },
            "subjects": subject,
        },
    ]


HEADER = (
    "# Generated by `make manifests` from operator/src/ringkv_operator/install.py: do not edit.\n"
)


def _docs(objs: list[dict[str, Any]]) -> str:
    return HEADER + "---\n".join(
        yaml.safe_dump(o, sort_keys=False, width=100, allow_unicode=True) for o in objs
    )


def manifests() -> dict[str, str]:
    """File name -> YAML, applied in name order by `kubectl apply -f manifests/`."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(NAMESPACE, None)}
    return {
        "00-namespace.yaml": _docs([namespace]),
        "01-crds.yaml": _docs(crds.all_crds()),
        "02-rbac.yaml": _docs(rbac()),
        "03-operator.yaml": _docs([deployment()]),
    }


def write(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in manifests().items():
        (directory / name).write_text(text)


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "manifests"))
