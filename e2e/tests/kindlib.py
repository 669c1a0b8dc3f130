"""Helpers of the kind tests: the images, waits, namespaces, and the in-cluster client pods.

`client_pod` runs e2e/tests/incluster_client.py (from the ConfigMap that
`install_client_script` makes) in a pod of the node image, labelled
`ringkv.io/client: "true"` as the NetworkPolicies ask; `Writer` is one that
writes until told to stop, then reads everything back.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubeharness.kind import Kubectl
from kubeharness.plugin import wait_for

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_IMAGE = os.environ.get("OPERATOR_IMAGE", "ringkv/operator:e2e")
NODE_IMAGE = os.environ.get("NODE_IMAGE", "ringkv/node:e2e")
SYSTEM = "ringkv-system"
READY_TIMEOUT = 300.0
SCALE_TIMEOUT = 600.0
NODE_ENV = [
    {"name": "RINGKV_DROP_DELAY", "value": "5s"},
    {"name": "RINGKV_ANTI_ENTROPY_INTERVAL", "value": "5s"},
    {"name": "RINGKV_HINT_INTERVAL", "value": "200ms"},
]


def wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    return wait_for(predicate, timeout=timeout, interval=2.0, what=what)


@contextmanager
def namespace(kubectl: Kubectl, prefix: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace; on a failure in it, the diagnostics; then its KVClusters and it go."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    kubectl.run("create", "namespace", name)
    failed = request.session.testsfailed
    try:
        yield name
    finally:
        if request.session.testsfailed > failed:
            print(kubectl.diagnostics(name))
        kubectl.run("delete", "kvc", "--all", "-n", name, "--wait=true", timeout=180, check=False)
        kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def install_client_script(kubectl: Kubectl, ns: str) -> None:
    script = (Path(__file__).parent / "incluster_client.py").read_text()
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "client-script"},
            "data": {"incluster_client.py": script},
        },
        ns,
    )


def kvc(kubectl: Kubectl, ns: str, name: str = "kv") -> dict[str, Any]:
    return dict(kubectl.get_json("kvc", name, "-n", ns))


def status(kubectl: Kubectl, ns: str, name: str = "kv") -> dict[str, Any]:
    return dict(kvc(kubectl, ns, name).get("status") or {})


def ready(kubectl: Kubectl, ns: str, name: str = "kv", **want: Any) -> Callable[[], Any]:
    """A check for `wait`: the KVCluster is Ready with these status fields."""

    def check() -> Any:
        st = status(kubectl, ns, name)
        ok = st.get("phase") == "Ready" and all(st.get(k) == v for k, v in want.items())
        return st if ok else False

    return check


def client_pod(
    name: str, args: list[str], cluster: str = "kv", secret: str | None = None
) -> dict[str, Any]:
    """A pod of the node image running incluster_client.py against KVCluster `cluster`
    (its token from `secret`, default the generated `<cluster>-auth`)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"ringkv.io/client": "true", "e2e": "1"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "client",
                    "image": NODE_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "/script/incluster_client.py", *args],
                    "env": [
                        {
                            "name": "NS",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                        },
                        # The client Service's DNS name, as users reach the cluster.
                        {
                            "name": "RINGKV_URL",
                            "value": f"http://{cluster}.$(NS).svc.cluster.local:8080",
                        },
                        {
                            "name": "RINGKV_TOKEN",
                            "valueFrom": {
                                "secretKeyRef": {
                                    "name": secret or f"{cluster}-auth",
                                    "key": "token",
                                }
                            },
                        },
                    ],
                    "volumeMounts": [{"name": "script", "mountPath": "/script"}],
                }
            ],
            "volumes": [{"name": "script", "configMap": {"name": "client-script"}}],
        },
    }


def run_client(kubectl: Kubectl, ns: str, name: str, args: list[str], cluster: str = "kv",
               secret: str | None = None, timeout: float = 600) -> dict[str, Any]:  # fmt: skip
    """Run incluster_client.py in a pod to the end; its JSON summary."""
    kubectl.apply(client_pod(name, args, cluster, secret), ns)
    wait(
        lambda: pod_phase(kubectl, ns, name) in ("Succeeded", "Failed"),
        timeout,
        f"client pod {name} to finish",
    )
    assert pod_phase(kubectl, ns, name) == "Succeeded", kubectl.run("logs", "-n", ns, name).stdout
    return summary(kubectl, ns, name)


def pod_phase(kubectl: Kubectl, ns: str, name: str) -> str:
    return str(kubectl.get_json("pod", name, "-n", ns).get("status", {}).get("phase", ""))


def summary(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    out = kubectl.run("logs", "-n", ns, name).stdout.strip().splitlines()
    return dict(json.loads(out[-1]))


class Writer:
    """The in-cluster writer pod: started, then stopped through a file, then its summary."""

    def __init__(self, kubectl: Kubectl, ns: str, name: str) -> None:
        self.kubectl, self.ns, self.name = kubectl, ns, name

    def __enter__(self) -> Writer:
        self.kubectl.apply(client_pod(self.name, ["run"]), self.ns)
        wait(
            lambda: pod_phase(self.kubectl, self.ns, self.name) == "Running",
            120,
            f"writer {self.name} running",
        )
        time.sleep(3)
        return self

    def stop(self) -> dict[str, Any]:
        self.kubectl.exec(self.ns, self.name, "touch", "/tmp/stop")
        wait(
            lambda: pod_phase(self.kubectl, self.ns, self.name) in ("Succeeded", "Failed"),
            300,
            f"writer {self.name} to finish",
        )
        return summary(self.kubectl, self.ns, self.name)

    def __exit__(self, *exc: object) -> None:
        pass


def user_env(kubectl: Kubectl) -> dict[str, str]:
    """kubectl and the plugin on PATH (the venv's kubectl-ringkv), the kind cluster as
    the kubeconfig; no RINGKV_*: as a user's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGKV_")}
    bin_dir = Path(sys.executable).parent
    path = f"{Path(kubectl.binary).parent}:{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    return env | {"PATH": path, "KUBECONFIG": str(kubectl.kubeconfig), "KUBECTL": kubectl.binary}


def patch_kvc(kubectl: Kubectl, ns: str, name: str, patch: dict[str, Any]) -> None:
    """A JSON merge patch of a KVCluster, as `kubectl patch --type=merge` does."""
    kubectl.run("patch", "kvc", name, "-n", ns, "--type=merge", "-p", json.dumps(patch))
