"""Tier-3 smoke: the real kube-apiserver harness works end to end.

A CRD shaped like KVCluster (status and scale subresources) and a StatefulSet
like the one the operator will own go through the API server and read back;
with kube-controller-manager the StatefulSet controller creates the Pods and
PVCs, and garbage collection removes the Pods once the StatefulSet is gone.
Pods stay Pending: there are no nodes in this tier.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubeharness.plugin import wait_for

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client as k  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

pytestmark = [pytest.mark.k8s_api, pytest.mark.timeout(120)]

GROUP, VERSION, PLURAL = "ringkv.io", "v1alpha1", "kvclusters"

KVCLUSTER_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {
            "plural": PLURAL,
            "singular": "kvcluster",
            "kind": "KVCluster",
            "shortNames": ["kvc"],
        },
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                                "properties": {"replicas": {"type": "integer", "minimum": 1}},
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas",
                    },
                },
            }
        ],
    },
}


def _apply_crd(api: Any) -> None:
    ext = k.ApiextensionsV1Api(api)
    try:
        ext.create_custom_resource_definition(KVCLUSTER_CRD)
    except ApiException as e:
        if e.status != 409:  # already there from an earlier test in this session
            raise

    def established() -> bool:
        crd = ext.read_custom_resource_definition(KVCLUSTER_CRD["metadata"]["name"])
        return any(
            c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])
        )

    wait_for(established, timeout=30, what="CRD Established")


def test_apiserver_is_ready(kube_control_plane: Any) -> None:
    status, body = kube_control_plane.get("/readyz")
    assert (status, body) == (200, "ok")
    status, _ = kube_control_plane.get("/version")
    assert status == 200


def test_crd_and_custom_object_roundtrip(kube_api_client: Any, kube_namespace: str) -> None:
    _apply_crd(kube_api_client)
    custom = k.CustomObjectsApi(kube_api_client)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "KVCluster",
        "metadata": {"name": "demo"},
        "spec": {"replicas": 3, "partitions": 256},
    }
    # A freshly established CRD can take a moment to be served by discovery.
    wait_for(lambda: _try_create(custom, kube_namespace, body), timeout=30, what="KVCluster create")

    got = custom.get_namespaced_custom_object(GROUP, VERSION, kube_namespace, PLURAL, "demo")
    assert got["spec"] == {"replicas": 3, "partitions": 256}

    custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        kube_namespace,
        PLURAL,
        "demo",
        {"status": {"phase": "Pending", "replicas": 0}},
    )
    got = custom.get_namespaced_custom_object(GROUP, VERSION, kube_namespace, PLURAL, "demo")
    assert got["status"] == {"phase": "Pending", "replicas": 0}
    assert got["spec"]["replicas"] == 3  # the status subresource never touches spec

    scale = custom.get_namespaced_custom_object_scale(
        GROUP, VERSION, kube_namespace, PLURAL, "demo"
    )
    assert scale["spec"]["replicas"] == 3

    with pytest.raises(ApiException) as rejected:  # the schema is enforced by the real server
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            kube_namespace,
            PLURAL,
            {**body, "metadata": {"name": "bad"}, "spec": {"replicas": 0}},
        )
    assert rejected.value.status == 422


def _try_create(custom: Any, ns: str, body: dict[str, Any]) -> bool:
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


def _statefulset(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "ringkv", "app.kubernetes.io/instance": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "serviceName": f"{name}-peers",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "node",
                            "image": "ringkv/node:test",
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ]
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
        },
    }


def test_statefulset_roundtrip(kube_api_client: Any, kube_namespace: str) -> None:
    apps, core = k.AppsV1Api(kube_api_client), k.CoreV1Api(kube_api_client)
    core.create_namespaced_service(
        kube_namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kv-peers"},
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "selector": {"app.kubernetes.io/instance": "kv"},
                "ports": [{"name": "http", "port": 8080}],
            },
        },
    )
    apps.create_namespaced_stateful_set(kube_namespace, _statefulset("kv", 3))

    sts = apps.read_namespaced_stateful_set("kv", kube_namespace)
    assert sts.spec.replicas == 3
    assert sts.spec.service_name == "kv-peers"
    assert sts.spec.volume_claim_templates[0].spec.resources.requests == {"storage": "1Gi"}
    svc = core.read_namespaced_service("kv-peers", kube_namespace)
    assert svc.spec.cluster_ip == "None"


def test_controller_manager_creates_pods_and_pvcs(
    kube_controller_manager: Any, kube_api_client: Any, kube_namespace: str
) -> None:
    apps, core = k.AppsV1Api(kube_api_client), k.CoreV1Api(kube_api_client)
    apps.create_namespaced_stateful_set(kube_namespace, _statefulset("kv", 3))
    want_pods = {"kv-0", "kv-1", "kv-2"}

    def pods() -> set[str]:
        return {p.metadata.name for p in core.list_namespaced_pod(kube_namespace).items}

    wait_for(lambda: pods() == want_pods, timeout=60, what="3 pods from the StatefulSet controller")
    pvcs = {
        c.metadata.name for c in core.list_namespaced_persistent_volume_claim(kube_namespace).items
    }
    assert pvcs == {"data-kv-0", "data-kv-1", "data-kv-2"}
    pod = core.read_namespaced_pod("kv-1", kube_namespace)
    assert pod.metadata.owner_references[0].kind == "StatefulSet"
    assert pod.spec.hostname == "kv-1"
    assert pod.spec.subdomain == "kv-peers"

    # Garbage collection: pods go with their StatefulSet, PVCs stay (Retain).
    apps.delete_namespaced_stateful_set("kv", kube_namespace, propagation_policy="Background")
    wait_for(lambda: not pods(), timeout=60, what="garbage collection of the pods")
    pvcs = {
        c.metadata.name for c in core.list_namespaced_persistent_volume_claim(kube_namespace).items
    }
    assert pvcs == {"data-kv-0", "data-kv-1", "data-kv-2"}
