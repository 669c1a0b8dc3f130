"""Fixtures of the operator's tier-3 tests: the CRDs, the operator itself, and a kubelet.

The control plane comes from the kubeharness plugin (loaded by pytest.ini).
The operator runs in this process through `kopf.testing.KopfRunner`, or as a
real `ringkv-operator` process where a test kills it. Nodes are reached
through the resolver seam (`--resolver map:FILE`), which `Kubelet` writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def kubelet(kube: Any, kube_namespace: str, tmp_path: Path) -> Iterator[Any]:
    from kubelet import Kubelet

    k = Kubelet(kube, kube_namespace, tmp_path / "kubelet").start()
    try:
        yield k
    finally:
        k.stop()


OPERATOR_NS = "ringkv-system"
OPERATOR_SA = "ringkv-operator"


def _apply(kube: Any, obj: dict[str, Any]) -> None:
    from ringkv_operator.k8s import ApiException, conflict

    meta = obj["metadata"]
    group_version = obj["apiVersion"]
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    plural = obj["kind"].lower() + "s"
    scoped = f"/namespaces/{meta['namespace']}" if meta.get("namespace") else ""
    path = f"{base}{scoped}/{plural}"
    try:
        kube.request("POST", path, obj)
    except ApiException as exc:
        if not conflict(exc):
            raise
        live = kube.request("GET", f"{path}/{meta['name']}")
        obj = {**obj, "metadata": {**meta, "resourceVersion": live["metadata"]["resourceVersion"]}}
        kube.request("PUT", f"{path}/{meta['name']}", obj)


@pytest.fixture(scope="session")
def operator_kubeconfig(
    kube: Any, kube_control_plane: Any, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A kubeconfig as the chart's ServiceAccount, bound by the chart's own RBAC.

    The operator under test runs with it, not as an admin: a verb the operator
    calls and the chart does not grant fails these tests.
    """
    from kubeharness import helm as helm_lib

    _apply(kube, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NS}})
    for obj in helm_lib.render(
        "--set",
        f"fullnameOverride={OPERATOR_SA}",
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
        release="ringkv",
        namespace=OPERATOR_NS,
    ):
        _apply(kube, obj)
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 86400},
    }
    token = kube.request(
        "POST", f"/api/v1/namespaces/{OPERATOR_NS}/serviceaccounts/{OPERATOR_SA}/token", request
    )["status"]["token"]
    config = json.loads(Path(kube_control_plane.kubeconfig).read_text())
    config["users"] = [{"name": OPERATOR_SA, "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = OPERATOR_SA
    path = tmp_path_factory.mktemp("operator") / "kubeconfig"
    path.write_text(json.dumps(config))
    return str(path)


@pytest.fixture
def operator_env(
    kubeconfig_env: str,
    operator_kubeconfig: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """Settings for an operator under test: the chart's identity, fast turns, nodes
    through the kubelet's map."""
    env = {
        "RINGKV_OPERATOR_RESOLVER": f"map:{tmp_path / 'kubelet' / 'urls.json'}",
        "RINGKV_OPERATOR_IDLE_INTERVAL": "2",
        "RINGKV_OPERATOR_BUSY_INTERVAL": "0.5",
        "RINGKV_OPERATOR_NODE_IMAGE": "ringkv/node:test",
        "KUBECONFIG": operator_kubeconfig,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def operator(crds: None, operator_env: dict[str, str], kube_namespace: str) -> Iterator[Any]:
    """The operator's handlers in this process (kopf.testing.KopfRunner), watching one namespace."""
    from kopf.testing import KopfRunner

    args = ["run", "-m", "ringkv_operator.handlers", "--standalone", "-n", kube_namespace]
    with KopfRunner(args, timeout=60) as runner:
        yield runner
    assert runner.exception is None, runner.output[-3000:]
    assert runner.exit_code == 0, runner.output[-3000:]


class OperatorProcess:
    """`ringkv-operator` as a real process, so that a test can SIGKILL it."""

    def __init__(self, namespace: str, env: dict[str, str], log: Path) -> None:
        self.namespace = namespace
        self.env = {**os.environ, **env}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        """Start it; `extra` flags win over the test defaults (no probe ports, 4 s Lease)."""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ringkv_operator",
                    "-n",
                    self.namespace,
                    "--health-port",
                    "0",
                    "--metrics-port",
                    "0",
                    "--lease-namespace",
                    OPERATOR_NS,  # where the chart's Role lets it hold a Lease
                    "--lease-name",
                    self.namespace,  # one per test
                    "--lease-duration",
                    "4",
                    *extra,
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""


class OperatorProcesses:
    """Makes `OperatorProcess`es for one test, and stops them all at the end."""

    def __init__(self, namespace: str, env: dict[str, str], root: Path) -> None:
        self.namespace, self.env, self.root = namespace, env, root
        self.made: list[OperatorProcess] = []

    def __call__(self) -> OperatorProcess:
        log = self.root / f"operator-{len(self.made)}.log"
        op = OperatorProcess(self.namespace, self.env, log)
        self.made.append(op)
        return op

    def output(self) -> str:
        return "\n".join(f"--- {op.log.name}\n{op.output()}" for op in self.made)


@pytest.fixture
def operator_process(
    crds: None, operator_env: dict[str, str], kube_namespace: str, tmp_path: Path
) -> Iterator[OperatorProcesses]:
    made = OperatorProcesses(kube_namespace, operator_env, tmp_path)
    try:
        yield made
    finally:
        for op in made.made:
            with contextlib.suppress(Exception):
                op.stop()
