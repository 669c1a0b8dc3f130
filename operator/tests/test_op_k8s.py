"""The operator against the real tier-3 API server (kube-apiserver + kube-controller-manager).

No mocks of the API: the CRDs' validation is the server's, the StatefulSet
controller makes the pods and claims, garbage collection does the cascade.
Without a kubelet the pods stay Pending, so these tests check objects and
status; test_op_scale.py adds a kubelet with real nodes.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubeharness.plugin import wait_for

from ringkv_operator.k8s import ApiException
from ringkv_operator.model import GROUP, PLURAL, VERSION

from optest import kvcluster, wait_status

pytestmark = [pytest.mark.k8s_api, pytest.mark.timeout(180)]

BASE = f"/apis/{GROUP}/{VERSION}/namespaces"


def create(kube: Any, ns: str, body: dict[str, Any]) -> dict[str, Any]:
    return kube.request("POST", f"{BASE}/{ns}/{PLURAL}", body)


def owned_by(obj: dict[str, Any], cluster: dict[str, Any]) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return any(r["uid"] == cluster["metadata"]["uid"] and r["controller"] for r in refs)


@pytest.mark.parametrize(
    ("spec", "field", "text"),
    [
        ({"replicas": 0}, "spec.replicas", "greater than or equal to 1"),
        ({"replicas": 2}, "spec.replicationFactor", "must not exceed replicas"),
        ({"partitions": 100}, "spec.partitions", "Unsupported value: 100"),
        ({"storage": {"size": "lots"}}, "spec.storage.size", "should match"),
        ({"storage": {"reclaimPolicy": "Recycle"}}, "spec.storage.reclaimPolicy", "Unsupported"),
        ({"consistency": {"write": "most"}}, "spec.consistency.write", "Unsupported"),
        ({"durability": "never"}, "spec.durability", "Unsupported"),
        ({"replicas": "three"}, "spec.replicas", "must be of type integer"),
    ],
)
def test_invalid_kvclusters_are_refused_naming_the_field(
    kube: Any, crds: None, kube_namespace: str, spec: dict[str, Any], field: str, text: str
) -> None:
    with pytest.raises(ApiException) as refused:
        create(kube, kube_namespace, kvcluster("bad", **spec))
    assert refused.value.status == 422
    body = str(refused.value.body)
    assert field in body and text in body, body


def test_immutable_fields_and_shrinking_storage_are_refused(
    kube: Any, crds: None, kube_namespace: str
) -> None:
    create(kube, kube_namespace, kvcluster("kv"))
    path = f"{BASE}/{kube_namespace}/{PLURAL}/kv"
    for patch, field, text in [
        ({"partitions": 512}, "spec.partitions", "partitions is immutable"),
        ({"replicationFactor": 1}, "spec.replicationFactor", "replicationFactor is immutable"),
        ({"storage": {"size": "512Mi"}}, "spec.storage.size", "may grow but not shrink"),
    ]:
        with pytest.raises(ApiException) as refused:
            kube.request(
                "PATCH", path, {"spec": patch}, content_type="application/merge-patch+json"
            )
        assert refused.value.status == 422
        assert field in str(refused.value.body) and text in str(refused.value.body)
    grown = kube.request(
        "PATCH",
        path,
        {"spec": {"storage": {"size": "2Gi"}}},
        content_type="application/merge-patch+json",
    )
    assert grown["spec"]["storage"]["size"] == "2Gi"
    with pytest.raises(ApiException) as refused:
        create(kube, kube_namespace, {**kvcluster("x" * 53), "spec": {}})
    assert "metadata.name" in str(refused.value.body)


def test_scale_subresource_changes_spec_replicas(
    kube: Any, crds: None, kube_namespace: str
) -> None:
    create(kube, kube_namespace, kvcluster("kv"))
    path = f"{BASE}/{kube_namespace}/{PLURAL}/kv/scale"
    scale = kube.request("GET", path)
    assert scale["spec"]["replicas"] == 3
    kube.request(
        "PATCH", path, {"spec": {"replicas": 5}}, content_type="application/merge-patch+json"
    )
    assert kube.cluster(kube_namespace, "kv")["spec"]["replicas"] == 5


def test_a_kvcluster_creates_every_owned_object(
    kube: Any, kube_controller_manager: Any, kube_namespace: str, operator: Any
) -> None:
    ns = kube_namespace
    cluster = create(kube, ns, kvcluster("kv", replicas=3, storage={"size": "2Gi"}))
    sts = wait_for(lambda: kube.read("StatefulSet", ns, "kv"), timeout=30, what="StatefulSet")
    assert owned_by(sts, cluster)
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["serviceName"] == "kv-peers"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"] == 3
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ringkv/node:test"  # the operator's default node image
    env = {e["name"]: e for e in container["env"]}
    assert env["RINGKV_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "kv-auth", "key": "token"}
    for name, headless in (("kv-peers", True), ("kv", False)):
        svc = wait_for(lambda n=name: kube.read("Service", ns, n), timeout=10, what=name)
        assert owned_by(svc, cluster)
        assert (svc["spec"]["clusterIP"] == "None") is headless
        assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    pdb = kube.read("PodDisruptionBudget", ns, "kv")
    assert owned_by(pdb, cluster) and pdb["spec"]["maxUnavailable"] == 1
    secret = kube.read("Secret", ns, "kv-auth")
    assert owned_by(secret, cluster) and secret["data"]["token"]
    for obj in (sts, pdb, secret):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "ringkv-operator"
        assert labels["app.kubernetes.io/instance"] == "kv"
    # the StatefulSet controller makes the pods and claims; no kubelet: they stay Pending
    wait_for(
        lambda: len(kube.list("Pod", ns, {"app.kubernetes.io/instance": "kv"})) == 3,
        timeout=30,
        what="3 pods",
    )
    status = wait_status(
        kube,
        ns,
        "kv",
        lambda s: s.get("phase") == "Pending" and s.get("replicas") == 3,
        what="Pending with 3 pods",
    )
    assert status["readyReplicas"] == 0 and "waiting for kv-0" in status["message"]
    assert status["observedGeneration"] == 1
    assert {c["type"] for c in status["conditions"]} >= {"Ready", "Progressing", "Degraded"}
    # the token survives the operator's turns
    time.sleep(3)
    assert kube.read("Secret", ns, "kv-auth")["data"]["token"] == secret["data"]["token"]


def test_hand_edits_are_repaired_and_foreign_labels_survive(
    kube: Any, kube_controller_manager: Any, kube_namespace: str, operator: Any
) -> None:
    ns = kube_namespace
    create(kube, ns, kvcluster("kv"))
    wait_for(lambda: kube.read("Service", ns, "kv"), timeout=30, what="client Service")
    wait_for(lambda: kube.read("StatefulSet", ns, "kv"), timeout=30, what="StatefulSet")
    kube.patch(
        "Service",
        ns,
        "kv",
        {
            "metadata": {"labels": {"team": "search", "app.kubernetes.io/instance": "other"}},
            "spec": {"selector": {"app": "elsewhere"}, "ports": [{"name": "x", "port": 1}]},
        },
    )
    kube.patch(
        "StatefulSet",
        ns,
        "kv",
        {"spec": {"template": {"spec": {"containers": [{"name": "node", "image": "evil:1"}]}}}},
    )

    def repaired() -> bool:
        svc = kube.read("Service", ns, "kv")
        sts = kube.read("StatefulSet", ns, "kv")
        labels = svc["metadata"]["labels"]
        return (
            svc["spec"]["ports"][0]["port"] == 8080
            and "app" not in svc["spec"]["selector"]
            and labels.get("app.kubernetes.io/instance") == "kv"
            and sts["spec"]["template"]["spec"]["containers"][0]["image"] == "ringkv/node:test"
        )

    wait_for(repaired, timeout=30, what="the operator to repair the hand edits")
    svc = kube.read("Service", ns, "kv")
    assert svc["metadata"]["labels"]["team"] == "search"  # not ours: kept
    assert svc["spec"]["selector"] == {
        "app.kubernetes.io/name": "ringkv",
        "app.kubernetes.io/instance": "kv",
        "app.kubernetes.io/component": "storage",
    }


def test_an_object_it_does_not_own_is_left_alone(
    kube: Any, kube_namespace: str, operator: Any
) -> None:
    ns = kube_namespace
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kv", "namespace": ns, "labels": {"mine": "yes"}},
            "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80}]},
        }
    )
    create(kube, ns, kvcluster("kv"))
    status = wait_status(kube, ns, "kv", lambda s: s.get("phase") == "Failed", what="Failed")
    assert "Service kv exists and is not owned" in status["message"]
    svc = kube.read("Service", ns, "kv")
    assert svc["spec"]["selector"] == {"app": "theirs"}
    assert not svc["metadata"].get("ownerReferences")


def test_pause_stops_reconciling_and_delete_cascades(
    kube: Any, kube_controller_manager: Any, kube_namespace: str, operator: Any
) -> None:
    ns = kube_namespace
    create(kube, ns, kvcluster("kv"))
    wait_for(lambda: kube.read("Service", ns, "kv"), timeout=30, what="client Service")
    path = f"{BASE}/{ns}/{PLURAL}/kv"
    merge = "application/merge-patch+json"
    kube.request("PATCH", path, {"spec": {"paused": True}}, content_type=merge)
    status = wait_status(kube, ns, "kv", lambda s: s.get("phase") == "Paused", what="Paused")
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "Paused"
    kube.patch("Service", ns, "kv", {"spec": {"ports": [{"name": "x", "port": 1}]}})
    time.sleep(4)  # two idle intervals: a running operator would have repaired it
    assert kube.read("Service", ns, "kv")["spec"]["ports"][0]["port"] == 1
    kube.request("PATCH", path, {"spec": {"paused": False}}, content_type=merge)
    wait_for(
        lambda: kube.read("Service", ns, "kv")["spec"]["ports"][0]["port"] == 8080,
        timeout=30,
        what="repair after unpausing",
    )

    kube.request("DELETE", path)
    wait_for(lambda: kube.cluster(ns, "kv") is None, timeout=30, what="KVCluster deleted")
    for kind, name in [
        ("StatefulSet", "kv"),
        ("Service", "kv"),
        ("Service", "kv-peers"),
        ("PodDisruptionBudget", "kv"),
        ("Secret", "kv-auth"),
    ]:
        wait_for(
            lambda k=kind, n=name: kube.read(k, ns, n) is None,
            timeout=60,
            what=f"{kind} {name} garbage-collected",
        )


def test_a_deleted_token_secret_is_not_silently_replaced(
    kube: Any, kube_namespace: str, operator: Any
) -> None:
    """Running pods hold the old token: a new one would split the cluster."""
    ns = kube_namespace
    create(kube, ns, kvcluster("kv"))
    wait_for(lambda: kube.read("StatefulSet", ns, "kv"), timeout=30, what="StatefulSet")
    kube.delete("Secret", ns, "kv-auth")
    status = wait_status(kube, ns, "kv", lambda s: s.get("phase") == "Failed", what="Failed")
    assert "Secret kv-auth is gone" in status["message"]
    assert kube.read("Secret", ns, "kv-auth") is None


def test_network_policy_per_cluster_when_enabled(
    kube: Any,
    crds: None,
    operator_env: dict[str, str],
    kube_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kind's CNI does not enforce policies: here the real API server validates it."""
    from kopf.testing import KopfRunner

    ns = kube_namespace
    monkeypatch.setenv("RINGKV_OPERATOR_NETWORK_POLICY", "on")
    monkeypatch.setenv("POD_NAMESPACE", "ringkv-system")
    args = ["run", "-m", "ringkv_operator.handlers", "--standalone", "-n", ns]
    with KopfRunner(args, timeout=60) as runner:
        create(kube, ns, kvcluster("kv"))
        policy = wait_for(
            lambda: kube.read("NetworkPolicy", ns, "kv"), timeout=30, what="NetworkPolicy"
        )
    assert runner.exception is None
    peers = policy["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"ringkv.io/client": "true"}}} in peers
    assert any(
        p.get("namespaceSelector", {}).get("matchLabels")
        == {"kubernetes.io/metadata.name": "ringkv-system"}
        for p in peers
    )


def test_the_operator_under_test_has_only_the_charts_rights(
    operator_kubeconfig: str, kube_namespace: str
) -> None:
    """Every operator in these tests runs as the chart's ServiceAccount: not an admin."""
    from kubernetes import config

    from ringkv_operator.k8s import Kube

    as_operator = Kube(config.new_client_from_config(config_file=operator_kubeconfig))
    assert as_operator.list("Pod", kube_namespace) == []  # granted: it watches pods
    for verb, call in [
        ("delete a StatefulSet", lambda: as_operator.delete("StatefulSet", kube_namespace, "x")),
        ("read a ConfigMap", lambda: as_operator.read("ConfigMap", kube_namespace, "x")),
        ("delete a Secret", lambda: as_operator.delete("Secret", kube_namespace, "x")),
    ]:
        with pytest.raises(ApiException) as refused:
            call()
        assert refused.value.status == 403, verb
