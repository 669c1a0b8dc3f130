"""Unit tests of the desired objects (builders) and the spec they come from."""

from __future__ import annotations

from typing import Any

import pytest

from ringkv_operator import builders
from ringkv_operator.model import Cluster, SpecError, parse_cluster, parse_quantity


def kvc(name: str = "kv", **spec: Any) -> Cluster:
    return parse_cluster(
        {
            "metadata": {"name": name, "namespace": "ns", "uid": "u-1", "generation": 4},
            "spec": spec,
        }
    )


def env_of(sts: dict[str, Any]) -> dict[str, Any]:
    container = sts["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_defaults_fill_an_empty_spec() -> None:
    spec = kvc().spec
    assert (spec.replicas, spec.replication_factor, spec.partitions) == (3, 3, 256)
    assert (spec.storage_size, spec.reclaim_policy, spec.durability) == ("1Gi", "Retain", "fsync")
    assert (spec.read_consistency, spec.write_consistency) == ("quorum", "quorum")
    assert spec.auth_secret is None and not spec.paused and spec.pdb_enabled


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"replicas": 0}, "spec.replicas"),
        ({"replicas": 2}, "spec.replicationFactor"),
        ({"partitions": 100}, "spec.partitions"),
        ({"partitions": 1 << 17}, "spec.partitions"),
        ({"durability": "sometimes"}, "spec.durability"),
        ({"consistency": {"read": "most"}}, "spec.consistency.read"),
        ({"storage": {"size": "lots"}}, "lots"),
        ({"storage": {"reclaimPolicy": "Recycle"}}, "spec.storage.reclaimPolicy"),
        ({"env": [{"value": "x"}]}, "spec.env"),
        ({"replicas": True}, "spec.replicas"),
    ],
)
def test_bad_specs_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        kvc(**spec)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1Gi", 1 << 30), ("512Mi", 512 << 20), ("1G", 10**9), ("100", 100), ("1.5Gi", 3 << 29)],
)
def test_quantities(text: str, value: int) -> None:
    assert parse_quantity(text) == value


def test_statefulset_shape() -> None:
    cluster = kvc(replicas=5, replicationFactor=3, storage={"size": "2Gi"})
    sts = builders.statefulset(cluster, image="ringkv/node:9", replicas=5, partition=5)
    spec = sts["spec"]
    assert sts["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "ringkv.io/v1alpha1",
            "kind": "KVCluster",
            "name": "kv",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == "kv-peers"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 5}}
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenScaled": "Retain",
        "whenDeleted": "Retain",
    }
    claim = spec["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "ringkv/node:9"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["failureThreshold"] * 5 >= 1800
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroup"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["terminationGracePeriodSeconds"] > builders.SHUTDOWN_TIMEOUT_S
    assert pod["enableServiceLinks"] is False
    spread = pod["topologySpreadConstraints"][0]
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    # the selector is a subset of the template's labels, and never names the version
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_env_carries_settings_and_never_the_token_in_argv() -> None:
    cluster = kvc(durability="async", consistency={"write": "all"})
    sts = builders.statefulset(cluster, image="i", replicas=3, partition=3)
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert "args" not in container and "command" not in container
    env = env_of(sts)
    assert env["RINGKV_TOKEN"] == {"secretKeyRef": {"name": "kv-auth", "key": "token"}}
    assert env["RINGKV_NODE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["RINGKV_ADVERTISE_URL"] == "http://$(RINGKV_NODE_ID).kv-peers.ns.svc:8080"
    assert env["RINGKV_DURABILITY"] == "async"
    assert env["RINGKV_WRITE_CONSISTENCY"] == "all"
    assert env["RINGKV_DATA_AUTH"] == "on"
    assert env["RINGKV_PEERS"] == ",".join(
        f"kv-{i}=http://kv-{i}.kv-peers.ns.svc:8080" for i in range(3)
    )


def test_scaling_never_changes_the_pod_template() -> None:
    """A template change rolls every pod: replicas, partition and the seeds must not cause one."""
    small = kvc(replicas=3)
    big = kvc(replicas=7)
    a = builders.statefulset(small, image="i", replicas=3, partition=3)
    b = builders.statefulset(big, image="i", replicas=7, partition=0)
    assert a["spec"]["template"] == b["spec"]["template"]
    assert a["spec"]["replicas"] != b["spec"]["replicas"]


def test_user_env_wins_and_secret_name_is_followed() -> None:
    cluster = kvc(
        env=[
            {"name": "RINGKV_DROP_DELAY", "value": "2s"},
            {"name": "RINGKV_LOG_LEVEL", "value": "debug"},
        ],
        auth={"secretName": "mine"},
    )
    env = env_of(builders.statefulset(cluster, image="i", replicas=3, partition=3))
    assert env["RINGKV_DROP_DELAY"] == "2s"
    assert env["RINGKV_TOKEN"] == {"secretKeyRef": {"name": "mine", "key": "token"}}
    cluster = kvc(env=[{"name": "RINGKV_DURABILITY", "value": "async"}])
    names = [e["name"] for e in builders.node_env(cluster)]
    assert names.count("RINGKV_DURABILITY") == 1
    assert (
        env_of(builders.statefulset(cluster, image="i", replicas=3, partition=3))[
            "RINGKV_DURABILITY"
        ]
        == "async"
    )


def test_optional_scheduling_fields_are_explicitly_absent() -> None:
    plain = builders.statefulset(kvc(), image="i", replicas=3, partition=3)
    pod = plain["spec"]["template"]["spec"]
    assert pod["nodeSelector"] is None and pod["tolerations"] is None
    tuned = kvc(scheduling={"nodeSelector": {"disk": "ssd"}, "priorityClassName": "high"})
    pod = builders.statefulset(tuned, image="i", replicas=3, partition=3)["spec"]["template"][
        "spec"
    ]
    assert pod["nodeSelector"] == {"disk": "ssd"} and pod["priorityClassName"] == "high"


def test_services() -> None:
    cluster = kvc()
    peers = builders.peers_service(cluster)
    assert peers["metadata"]["name"] == "kv-peers"
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["publishNotReadyAddresses"] is True
    client = builders.client_service(cluster)
    assert client["metadata"]["name"] == "kv"
    assert client["spec"]["type"] == "ClusterIP"
    assert "publishNotReadyAddresses" not in client["spec"]
    assert client["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]


@pytest.mark.parametrize(
    ("n", "read", "write", "budget"),
    [
        (3, "quorum", "quorum", 1),
        (5, "quorum", "quorum", 2),
        (3, "one", "one", 2),
        (3, "quorum", "one", 1),
        (3, "all", "quorum", 1),  # `all` tolerates nobody; a budget of 0 would block drains
        (1, "quorum", "quorum", 1),
        (7, "one", "quorum", 3),
    ],
)
def test_pdb_budget(n: int, read: str, write: str, budget: int) -> None:
    assert builders.max_unavailable(n, read, write) == budget


def test_pdb_and_secret() -> None:
    cluster = kvc(replicas=5, replicationFactor=5)
    pdb = builders.pdb(cluster)
    assert pdb["spec"]["maxUnavailable"] == 2
    assert pdb["spec"]["selector"] == {"matchLabels": cluster.selector}
    secret = builders.auth_secret(cluster, "t0k3n")
    assert secret["metadata"]["name"] == "kv-auth"
    assert secret["stringData"] == {"token": "t0k3n"}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_map_size_leaves_room_for_the_log() -> None:
    assert builders.map_size(kvc(storage={"size": "1Gi"})) == (1 << 30) * 4 // 5 // 4096 * 4096
    assert builders.map_size(kvc(storage={"size": "10Mi"})) == 64 << 20  # a floor


def test_names_and_ordinals() -> None:
    cluster = kvc(name="kv")
    assert cluster.pod(2) == "kv-2" and cluster.pvc(2) == "data-kv-2"
    assert cluster.ordinal("kv-12") == 12
    assert cluster.ordinal("kv-x") is None and cluster.ordinal("kvx-1") is None
    assert cluster.pod_url(1) == "http://kv-1.kv-peers.ns.svc:8080"


def test_network_policy_lets_in_peers_the_operator_and_labelled_clients() -> None:
    cluster = kvc()
    extra = [{"namespaceSelector": {"matchLabels": {"team": "search"}}}]
    policy = builders.network_policy(cluster, "ringkv-system", extra)
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": cluster.selector}
    assert spec["policyTypes"] == ["Ingress"]
    rule = spec["ingress"][0]
    assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": cluster.selector}},
        {"podSelector": {"matchLabels": {"ringkv.io/client": "true"}}},
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ringkv-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ringkv-operator"}},
        },
        extra[0],
    ]
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "u-1"
