"""Shared fixtures for ringkv's Kubernetes test tiers.

The kubeharness fixtures (e2e/kubeharness/plugin.py) are loaded for the whole
test session by pytest.ini (`pythonpath = e2e`, `-p kubeharness.plugin`), so
that e2e/tests and operator/tests share one control plane. Here: `report`,
and for the kind modules `kubectl` and `operator` (installed from manifests/;
test_kind_operator.py and test_kind_plugin.py use it).
"""

import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubeharness.kind import Kubectl


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print a figure to the terminal (make e2e's output), also when the test passes."""

    def show(line: str) -> None:
        with capsys.disabled():
            print(f"\n    e2e: {line}", flush=True)

    return show


@pytest.fixture(scope="module")
def kubectl(kind_kubectl: Kubectl) -> Kubectl:
    return kind_kubectl


@pytest.fixture(scope="module")
def operator(kubectl: Kubectl) -> Iterator[None]:
    """`kubectl apply -f manifests/`, with the images this run built."""
    from kindlib import NODE_IMAGE, OPERATOR_IMAGE, ROOT, SYSTEM

    kubectl.run("apply", "-f", str(ROOT / "manifests"), timeout=120)
    container = {
        "name": "operator",
        "image": OPERATOR_IMAGE,
        "env": [{"name": "RINGKV_OPERATOR_NODE_IMAGE", "value": NODE_IMAGE}],
    }
    # The image's id in the pod template: a kind cluster kept from an earlier run
    # already runs an operator of the same tag, which must roll to this build.
    image_id = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", OPERATOR_IMAGE],
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout.strip()  # fmt: skip
    template: dict[str, Any] = {"spec": {"containers": [container]}}
    if image_id:
        template["metadata"] = {"annotations": {"ringkv.io/operator-image-id": image_id}}
    patch = {"spec": {"template": template}}
    kubectl.run("-n", SYSTEM, "patch", "deploy/ringkv-operator", "-p", json.dumps(patch))
    kubectl.run(
        "-n", SYSTEM, "rollout", "status", "deploy/ringkv-operator", "--timeout=180s", timeout=200
    )
    yield
    logs = kubectl.run("-n", SYSTEM, "logs", "deploy/ringkv-operator", "--tail=80", check=False)
    print("--- operator log\n" + logs.stdout + logs.stderr)
