"""The Helm chart, rendered by the real helm: lint, toggles, schema, and the files made from it.

Every documented toggle renders and lints; the schema refuses wrong types and
unknown keys; values.schema.json describes exactly the keys of values.yaml,
with the same words; manifests/ is what `make manifests` renders now. The
objects themselves are checked by the real API server in test_chart_k8s.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeharness import helm as helm_lib

ROOT = helm_lib.ROOT
CHART = helm_lib.CHART
KUBE_VERSION = helm_lib.kube_version()

# Each documented toggle, as `--set` arguments.
TOGGLES: dict[str, list[str]] = {
    "defaults": [],
    "namespaced": ["operator.clusterWide=false", "operator.watchNamespaces={team-a,team-b}"],
    "namespaced-own": ["operator.clusterWide=false"],
    "no-crds": ["crds.create=false"],
    "no-network-policy": ["networkPolicy.enabled=false"],
    "example": ["example.create=true"],
    "no-rbac": ["rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=mine"],
    "two-replicas": ["replicaCount=2"],
    "json-logs": ["operator.logFormat=json", "nodeImage=registry.example/ringkv/node:1"],
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return helm_lib.run(*args, check=check)


def sets(toggle: list[str]) -> list[str]:
    return [arg for item in toggle for arg in ("--set", item)]


render = helm_lib.render


def by_kind(docs: list[Any], kind: str) -> list[Any]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("toggle", sorted(TOGGLES))
def test_lint_and_render_every_toggle(toggle: str) -> None:
    helm("lint", str(CHART), "--kube-version", KUBE_VERSION, *sets(TOGGLES[toggle]))
    docs = render(*sets(TOGGLES[toggle]))
    for doc in docs:
        name = doc["metadata"]["name"]
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name), name
    assert len(by_kind(docs, "Deployment")) == 1


def test_defaults() -> None:
    docs = render()
    deploy = by_kind(docs, "Deployment")[0]
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "ringkv/operator:0.1.0"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["limits"]["memory"] == "512Mi"
    assert re.fullmatch(
        r"[0-9a-f]{64}", deploy["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    )
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "ringkv-operator"  # the NetworkPolicy's rule
    config = by_kind(docs, "ConfigMap")[0]["data"]
    assert config["RINGKV_OPERATOR_NODE_IMAGE"] == "ringkv/node:0.1.0"
    assert config["RINGKV_OPERATOR_NAMESPACES"] == ""
    assert config["RINGKV_OPERATOR_NETWORK_POLICY"] == "on"
    crds = by_kind(docs, "CustomResourceDefinition")
    assert {c["metadata"]["name"] for c in crds} == {"kvclusters.ringkv.io", "kvbackups.ringkv.io"}
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in crds)
    (role,) = by_kind(docs, "ClusterRole")
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"kvclusters", "statefulsets", "networkpolicies", "leases"} - resources == {"leases"}
    assert by_kind(docs, "Role")[0]["rules"][0]["resources"] == ["leases"]


def test_namespaced_install_grants_only_the_watched_namespaces() -> None:
    docs = render(*sets(TOGGLES["namespaced"]))
    roles = {r["metadata"]["namespace"]: r for r in by_kind(docs, "Role")}
    assert set(roles) == {"team-a", "team-b", "ringkv-system"}  # the last: its Lease only
    assert {r for rule in roles["team-a"]["rules"] for r in rule["resources"]} >= {
        "kvclusters",
        "statefulsets",
        "secrets",
        "pods",
    }
    (cluster_role,) = by_kind(docs, "ClusterRole")
    cluster_wide = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert cluster_wide == {"storageclasses", "nodes", "customresourcedefinitions", "namespaces"}
    config = by_kind(docs, "ConfigMap")[0]["data"]
    assert config["RINGKV_OPERATOR_NAMESPACES"] == "team-a,team-b"
    own = by_kind(render(*sets(TOGGLES["namespaced-own"])), "ConfigMap")[0]["data"]
    assert own["RINGKV_OPERATOR_NAMESPACES"] == "ringkv-system"


def test_toggles_do_what_they_say() -> None:
    assert not by_kind(render(*sets(TOGGLES["no-crds"])), "CustomResourceDefinition")
    config = by_kind(render(*sets(TOGGLES["no-network-policy"])), "ConfigMap")[0]["data"]
    assert config["RINGKV_OPERATOR_NETWORK_POLICY"] == "off"
    (example,) = by_kind(render(*sets(TOGGLES["example"])), "KVCluster")
    assert (
        example["spec"] == {"replicas": 3} and example["metadata"]["namespace"] == "ringkv-system"
    )
    bare = render(*sets(TOGGLES["no-rbac"]))
    unhooked = [d for d in bare if "helm.sh/hook" not in (d["metadata"].get("annotations") or {})]
    assert not by_kind(unhooked, "ClusterRole") and not by_kind(unhooked, "ServiceAccount")
    assert (
        by_kind(bare, "Deployment")[0]["spec"]["template"]["spec"]["serviceAccountName"] == "mine"
    )
    assert by_kind(render(*sets(TOGGLES["two-replicas"])), "Deployment")[0]["spec"]["replicas"] == 2


def test_a_config_change_changes_the_checksum() -> None:
    def checksum(*extra: str) -> str:
        deploy = by_kind(render(*extra), "Deployment")[0]
        return str(deploy["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum() != checksum("--set", "operator.logFormat=json")
    assert checksum() == checksum("--set", "replicaCount=3")


def test_full_name_is_a_dns_label_of_at_most_63() -> None:
    long = "a" * 53  # Helm's longest release name
    for doc in render(release=long):
        assert len(doc["metadata"]["name"]) <= 63


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"replicaCount": "two"}, "replicaCount: Invalid type. Expected: integer"),
        ({"replicaCount": 0}, "replicaCount: Must be greater than or equal to 1"),
        (
            {"image": {"pullPolicy": "Sometimes"}},
            "image.pullPolicy: image.pullPolicy must be one of",
        ),
        ({"operator": {"logFormat": "xml"}}, "operator.logFormat must be one of"),
        ({"operator": {"watchNamespaces": ["Bad_NS"]}}, "operator.watchNamespaces.0"),
        ({"networkPolicy": {"enabled": "yes"}}, "networkPolicy.enabled: Invalid type"),
        ({"replicas": 3}, "Additional property replicas is not allowed"),
        ({"crds": {"install": True}}, "Additional property install is not allowed"),
    ],
)
def test_schema_refuses_wrong_values(tmp_path: Path, values: dict[str, Any], error: str) -> None:
    bad = tmp_path / "values.yaml"
    bad.write_text(yaml.safe_dump(values))
    proc = helm(
        "template", "rk", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(bad), check=False
    )
    assert proc.returncode != 0
    assert error in proc.stderr, proc.stderr


def _values_comments() -> dict[str, str]:
    """Dotted key -> its `# --` comment, from values.yaml."""
    out: dict[str, str] = {}
    stack: list[str] = []
    pending = None
    for line in (CHART / "values.yaml").read_text().splitlines():
        if m := re.match(r"^\s*# -- (.*)$", line):
            pending = m.group(1)
            continue
        if m := re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line):
            stack = [*stack[: len(m.group(1)) // 2], m.group(2)]
            if pending is not None:
                out[".".join(stack)] = pending
            pending = None
    return out


def _schema_leaves(schema: dict[str, Any], path: str = "") -> dict[str, str]:
    out = {}
    for key, sub in (schema.get("properties") or {}).items():
        here = f"{path}.{key}" if path else key
        if "description" in sub:
            out[here] = sub["description"]
        out.update(_schema_leaves(sub, here))
    return out


def test_values_schema_is_in_step_with_values_yaml() -> None:
    comments = _values_comments()
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert _schema_leaves(schema) == comments
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def leaves(doc: dict[str, Any], path: str = "") -> set[str]:
        keys = set()
        for key, value in doc.items():
            here = f"{path}.{key}" if path else key
            if here in comments:
                keys.add(here)
            elif isinstance(value, dict):
                keys |= leaves(value, here)
            else:
                keys.add(here)
        return keys

    undocumented = leaves(values) - set(comments)
    assert undocumented == set(), f"values without a `# --` comment: {undocumented}"


def test_manifests_are_what_the_chart_renders(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "manifests.sh"), str(tmp_path)],
        check=True,
        timeout=120,
        env={**os.environ, "HELM": str(helm_lib.require())},
    )
    for path in sorted(tmp_path.iterdir()):
        committed = ROOT / "manifests" / path.name
        assert committed.read_text() == path.read_text(), f"{committed} is stale: make manifests"
