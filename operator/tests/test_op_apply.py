"""Unit tests of `apply`: patch only a real difference, keep what others added."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ringkv_operator import builders
from ringkv_operator.apply import Ownership, diff, immutable_drift, matches, ownership
from ringkv_operator.model import parse_cluster

CLUSTER = parse_cluster({"metadata": {"name": "kv", "namespace": "ns", "uid": "u-1"}, "spec": {}})


def served(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` as the API server would return it: defaults and bookkeeping added."""
    live = copy.deepcopy(obj)
    live["metadata"].update(resourceVersion="12", uid="x", creationTimestamp="2026-01-01T00:00:00Z")
    live["status"] = {"observedGeneration": 1}
    if live["kind"] == "Service":
        live["spec"].update(clusterIPs=["10.0.0.1"], sessionAffinity="None", ipFamilies=["IPv4"])
        live["spec"].setdefault("clusterIP", "10.0.0.1")
    if live["kind"] == "StatefulSet":
        pod = live["spec"]["template"]["spec"]
        pod.update(dnsPolicy="ClusterFirst", restartPolicy="Always", schedulerName="default")
        pod.pop("nodeSelector")
        pod.pop("tolerations")
        pod.pop("priorityClassName")
        container = pod["containers"][0]
        container.update(terminationMessagePath="/dev/termination-log")
        container["env"][0]["valueFrom"]["fieldRef"]["apiVersion"] = "v1"
        container["readinessProbe"]["successThreshold"] = 1
        live["spec"]["revisionHistoryLimit"] = 10
    return live


@pytest.mark.parametrize(
    "make",
    [
        lambda: builders.statefulset(CLUSTER, image="i", replicas=3, partition=3),
        lambda: builders.peers_service(CLUSTER),
        lambda: builders.client_service(CLUSTER),
        lambda: builders.pdb(CLUSTER),
    ],
)
def test_served_object_needs_no_patch(make: Any) -> None:
    desired = make()
    assert diff(desired, served(desired)) is None


def test_a_real_change_is_patched_and_nothing_else() -> None:
    desired = builders.statefulset(CLUSTER, image="i", replicas=3, partition=3)
    live = served(desired)
    grown = builders.statefulset(CLUSTER, image="i", replicas=4, partition=4)
    assert diff(grown, live) == {
        "spec": {"replicas": 4, "updateStrategy": {"rollingUpdate": {"partition": 4}}}
    }


def test_foreign_labels_and_annotations_stay() -> None:
    desired = builders.client_service(CLUSTER)
    live = served(desired)
    live["metadata"]["labels"]["team"] = "search"
    live["metadata"]["annotations"] = {"example.com/owner": "ann"}
    assert diff(desired, live) is None  # theirs: left alone
    live["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "helm"
    assert diff(desired, live) == {
        "metadata": {"labels": {"app.kubernetes.io/managed-by": "ringkv-operator"}}
    }


def test_a_hand_edited_pod_spec_is_replaced_whole() -> None:
    desired = builders.statefulset(CLUSTER, image="i", replicas=3, partition=3)
    live = served(desired)
    live["spec"]["template"]["spec"]["nodeSelector"] = {"disk": "hdd"}
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "evil"
    patch = diff(desired, live)
    assert patch is not None
    pod = patch["spec"]["template"]["spec"]
    assert pod["nodeSelector"] is None  # removed: the spec names none
    assert pod["containers"][0]["image"] == "i"
    assert pod["dnsPolicy"] is None  # the server's defaults are set to null, and come back
    assert "replicas" not in patch["spec"]


def test_removed_resources_are_removed() -> None:
    live = served(builders.statefulset(CLUSTER, image="i", replicas=3, partition=3))
    live["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1"}}
    desired = builders.statefulset(CLUSTER, image="i", replicas=3, partition=3)
    patch = diff(desired, live)
    assert patch is not None
    assert patch["spec"]["template"]["spec"]["containers"][0]["resources"] == {}


def test_immutable_fields_are_reported_not_patched() -> None:
    desired = builders.statefulset(CLUSTER, image="i", replicas=3, partition=3)
    live = served(desired)
    live["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = "9Gi"
    assert diff(desired, live) is None
    assert immutable_drift(desired, live) == ["spec.volumeClaimTemplates"]
    assert immutable_drift(desired, served(desired)) == []


def test_generated_secret_keeps_its_token() -> None:
    live = served(builders.auth_secret(CLUSTER, "old"))
    live["data"] = {"token": "b2xk"}
    live.pop("stringData")
    assert diff(builders.auth_secret(CLUSTER, "new"), live) is None


def test_ownership() -> None:
    ours = served(builders.pdb(CLUSTER))
    assert ownership(ours, "u-1") == Ownership.OURS
    assert ownership(ours, "u-2") == Ownership.FOREIGN
    assert ownership(None, "u-1") == Ownership.ABSENT
    bare = served(builders.pdb(CLUSTER))
    bare["metadata"].pop("ownerReferences")
    assert ownership(bare, "u-1") == Ownership.FOREIGN
    not_controller = served(builders.pdb(CLUSTER))
    not_controller["metadata"]["ownerReferences"][0]["controller"] = False
    assert ownership(not_controller, "u-1") == Ownership.FOREIGN


@pytest.mark.parametrize(
    ("want", "have", "same"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": {}}, {}, True),
        ({"a": {}}, {"a": {"x": 1}}, False),
        ({"a": None}, {}, True),
        ({"a": None}, {"a": "x"}, False),
        ([{"a": 1}], [{"a": 1, "b": 2}], True),
        ([{"a": 1}], [{"a": 1}, {"a": 2}], False),
        ([], None, True),
        ("x", "x", True),
        (3, "3", False),
    ],
)
def test_matches_truth_table(want: Any, have: Any, same: bool) -> None:
    assert matches(want, have) is same


def test_a_widened_service_selector_is_narrowed_back() -> None:
    desired = builders.client_service(CLUSTER)
    live = served(desired)
    live["spec"]["selector"]["app"] = "elsewhere"
    patch = diff(desired, live)
    assert patch == {"spec": {"selector": {**desired["spec"]["selector"], "app": None}}}
