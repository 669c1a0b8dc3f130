"""Tier 4: the Helm chart on kind: install, `helm test`, upgrade while serving, uninstall.

It first takes away a `kubectl apply -f manifests/` install (two operators
would both drive the same KVClusters), installs the chart with this run's
images, and uninstalls it at the end whatever happened (test_kind_operator.py
installs from manifests/ in turn). An
upgrade to a new operator image keeps a KVCluster Ready and serving all
the way through; uninstalling keeps the CRDs, the KVClusters and their data.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from kubeharness import helm as helm_lib
from kubeharness.kind import Kubectl, cluster_name

from kindlib import (
    NODE_IMAGE,
    OPERATOR_IMAGE,
    READY_TIMEOUT,
    ROOT,
    Writer,
    install_client_script,
    patch_kvc,
    ready,
    status,
    wait,
)

pytestmark = [pytest.mark.kind, pytest.mark.timeout(1800)]

RELEASE, RELEASE_NS = "rk", "ringkv-helm"
CACHE = Path(os.environ.get("RINGKV_CACHE", Path.home() / ".cache" / "ringkv"))


def helm(kubectl: Kubectl, *args: str, timeout: float = 600) -> str:
    proc = subprocess.run(
        [str(helm_lib.require()), f"--kubeconfig={kubectl.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def image_values(image: str) -> list[str]:
    repository, tag = image.rsplit(":", 1)
    node_repo, node_tag = NODE_IMAGE.rsplit(":", 1)
    return [
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        f"nodeImage={node_repo}:{node_tag}",
    ]


def load_image(tag: str) -> None:
    subprocess.run(["docker", "tag", OPERATOR_IMAGE, tag], check=True, timeout=60)
    subprocess.run(
        [str(CACHE / "bin" / "kind"), "load", "docker-image", "--name", cluster_name(), tag],
        check=True,
        timeout=300,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def kubectl(kind_kubectl: Kubectl) -> Kubectl:
    return kind_kubectl


@pytest.fixture(scope="module")
def release(kubectl: Kubectl) -> Iterator[str]:
    # No other operator may drive the clusters: remove a manifests/ install first,
    # all but its CRDs (deleting them would delete every KVCluster and KVBackup),
    # which the release adopts as Helm documents it.
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "ringkv.yaml").read_text()) if d]
    others = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    kubectl.run(
        "delete", "--ignore-not-found", "--wait=true", "-f", "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": others}),
        timeout=300, check=False,
    )  # fmt: skip
    for crd in (d for d in docs if d["kind"] == "CustomResourceDefinition"):
        name = f"crd/{crd['metadata']['name']}"
        kubectl.run("annotate", name, "--overwrite", f"meta.helm.sh/release-name={RELEASE}",
                    f"meta.helm.sh/release-namespace={RELEASE_NS}", check=False)  # fmt: skip
        kubectl.run("label", name, "--overwrite", "app.kubernetes.io/managed-by=Helm", check=False)
    helm(
        kubectl,
        "upgrade",
        "--install",
        RELEASE,
        str(helm_lib.CHART),
        "--namespace",
        RELEASE_NS,
        "--create-namespace",
        "--wait",
        "--timeout",
        "5m",
        *image_values(OPERATOR_IMAGE),
    )
    yield RELEASE
    # Never leave a second operator behind for the next module (uninstall is idempotent).
    subprocess.run(
        [
            str(helm_lib.require()),
            f"--kubeconfig={kubectl.kubeconfig}",
            "uninstall",
            RELEASE,
            "--namespace",
            RELEASE_NS,
            "--ignore-not-found",
            "--wait",
        ],
        capture_output=True,
        timeout=300,
        check=False,
    )
    logs = kubectl.run(
        "-n",
        RELEASE_NS,
        "logs",
        "-l",
        "app.kubernetes.io/name=ringkv-operator",
        "--tail=60",
        check=False,
    )
    print("--- operator log\n" + logs.stdout + logs.stderr)


@pytest.fixture(scope="module")
def ns(kubectl: Kubectl, release: str) -> Iterator[str]:
    name = f"e2e-helm-{secrets.token_hex(3)}"
    kubectl.run("create", "namespace", name)
    install_client_script(kubectl, name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def test_helm_install_then_helm_test(
    kubectl: Kubectl, release: str, report: Callable[[str], None]
) -> None:
    out = helm(kubectl, "test", release, "--namespace", RELEASE_NS, "--logs", timeout=600)
    report("helm test: " + " ".join(out.split()[-12:]))
    assert "Phase:          Succeeded" in out, out
    assert "put and got a key through Service" in out, out


def test_helm_upgrade_keeps_a_cluster_ready_and_serving(
    kubectl: Kubectl, ns: str, report: Callable[[str], None]
) -> None:
    kubectl.apply(
        {
            "apiVersion": "ringkv.io/v1alpha1",
            "kind": "KVCluster",
            "metadata": {"name": "kv"},
            "spec": {"replicas": 3, "partitions": 64},
        },
        ns,
    )
    wait(ready(kubectl, ns, readyReplicas=3), READY_TIMEOUT, "KVCluster Ready")
    new = OPERATOR_IMAGE.rsplit(":", 1)[0] + ":e2e-upgraded"
    load_image(new)
    phases: set[str] = set()
    with Writer(kubectl, ns, "writer-upgrade") as writer:
        upgrade = subprocess.Popen(
            [
                str(helm_lib.require()),
                f"--kubeconfig={kubectl.kubeconfig}",
                "upgrade",
                RELEASE,
                str(helm_lib.CHART),
                "--namespace",
                RELEASE_NS,
                "--wait",
                "--timeout",
                "5m",
                *image_values(new),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        while upgrade.poll() is None:
            phases.add(str(status(kubectl, ns).get("phase")))
            time.sleep(1)
        output, _ = upgrade.communicate()  # reads and closes its pipe
        assert upgrade.returncode == 0, output

        def only_new() -> bool:
            pods = kubectl.get_json(
                "pods", "-n", RELEASE_NS, "-l", "app.kubernetes.io/name=ringkv-operator"
            )["items"]
            running = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
            phases.add(str(status(kubectl, ns).get("phase")))
            return {p["spec"]["containers"][0]["image"] for p in running} == {new}

        # The Deployment scales the old ReplicaSet down just after helm's --wait.
        wait(only_new, 120, "only the new operator pod")
        time.sleep(5)  # the new operator's first turns, under the writer
        phases.add(str(status(kubectl, ns).get("phase")))
        result = writer.stop()
    report(f"helm upgrade to {new}: KVCluster phases seen {sorted(phases)}; writer {result}")
    assert phases == {"Ready"}, phases
    assert result["failed"] == 0 and result["lost"] == 0, result


def test_helm_uninstall_keeps_kvclusters_and_their_data(
    kubectl: Kubectl, ns: str, report: Callable[[str], None]
) -> None:
    before = status(kubectl, ns)
    assert before.get("phase") == "Ready"
    helm(kubectl, "uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait")
    crds = kubectl.get_json("crd")["items"]
    assert {"kvclusters.ringkv.io", "kvbackups.ringkv.io"} <= {c["metadata"]["name"] for c in crds}
    assert kubectl.get_json("kvc", "kv", "-n", ns)["metadata"]["name"] == "kv"
    # The data is still served without the operator: read back what the writer wrote.
    with Writer(kubectl, ns, "writer-after") as writer:
        time.sleep(3)
        result = writer.stop()
    report(f"after helm uninstall: KVCluster kept, nodes serve; writer {result}")
    assert result["acked"] > 0 and result["lost"] == 0, result
    pvcs = kubectl.get_json("pvc", "-n", ns)["items"]
    assert len(pvcs) == 3
    # Clean up without an operator: its finalizer would hold the KVCluster forever.
    patch_kvc(kubectl, ns, "kv", {"metadata": {"finalizers": []}})
    kubectl.run("delete", "kvc", "kv", "-n", ns, "--wait=true", timeout=120)
