"""The chart's objects and manifests/ against the real tier-3 API server (server-side dry runs).

Every object each documented toggle renders, every file in manifests/ and
every example in manifests/examples/ is sent with `dryRun=All`: the server
validates it fully (schemas, the CRDs' CEL rules for the KVClusters, RBAC
objects) and stores nothing. The RBAC's fitness for the operator is checked
elsewhere: operator/tests run the operator under the chart's ServiceAccount.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeharness import helm as helm_lib

from test_chart import TOGGLES, sets

pytestmark = [pytest.mark.k8s_api, pytest.mark.timeout(180)]

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
PLURALS = {"NetworkPolicy": "networkpolicies"}


def collection(obj: dict[str, Any], namespace: str) -> str:
    group_version, kind = obj["apiVersion"], obj["kind"]
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    plural = PLURALS.get(kind, kind.lower() + "s")
    if kind in CLUSTER_SCOPED:
        return f"{base}/{plural}"
    return f"{base}/namespaces/{obj['metadata'].get('namespace') or namespace}/{plural}"


def dry_run(kube: Any, obj: dict[str, Any], namespace: str) -> None:
    from ringkv_operator.k8s import ApiException

    try:
        kube.request("POST", collection(obj, namespace), obj, query={"dryRun": "All"})
    except ApiException as exc:
        if exc.status == 409:  # exists already (the CRDs of this session): update instead
            live = kube.request("GET", f"{collection(obj, namespace)}/{obj['metadata']['name']}")
            obj = {
                **obj,
                "metadata": {
                    **obj["metadata"],
                    "resourceVersion": live["metadata"]["resourceVersion"],
                },
            }
            path = f"{collection(obj, namespace)}/{obj['metadata']['name']}"
            kube.request("PUT", path, obj, query={"dryRun": "All"})
            return
        raise AssertionError(f"{obj['kind']} {obj['metadata']['name']}: {exc.body}") from None


@pytest.mark.parametrize("toggle", sorted(TOGGLES))
def test_every_rendered_object_is_accepted(
    kube: Any, crds: None, kube_namespace: str, toggle: str
) -> None:
    extra = list(sets(TOGGLES[toggle]))
    if toggle == "namespaced":  # the watched namespaces must exist for their Roles
        extra = sets(
            ["operator.clusterWide=false", f"operator.watchNamespaces={{{kube_namespace}}}"]
        )
    docs = helm_lib.render(*extra, namespace=kube_namespace)
    assert docs
    for obj in docs:
        dry_run(kube, obj, kube_namespace)


def test_manifests_and_examples_are_accepted(kube: Any, crds: None, kube_namespace: str) -> None:
    root = helm_lib.ROOT / "manifests"
    files = sorted(root.glob("*.yaml")) + sorted((root / "examples").glob("*.yaml"))
    assert len(files) >= 3
    objs = [o for f in files for o in yaml.safe_load_all(Path(f).read_text()) if o]
    kinds = {o["kind"] for o in objs}
    assert {
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "Deployment",
        "KVCluster",
        "KVBackup",
    } <= kinds
    for obj in objs:
        if obj["kind"] == "Namespace":
            continue  # dry-run of a namespace is fine, but its objects would need it to exist
        if obj["metadata"].get("namespace") == "ringkv-system":
            obj = {**obj, "metadata": {**obj["metadata"], "namespace": kube_namespace}}
        dry_run(kube, obj, kube_namespace)
