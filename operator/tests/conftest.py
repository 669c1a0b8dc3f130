"""Fixtures of the operator's tier-3 tests: the CRDs, the operator itself, and a kubelet.

The control plane comes from the kubeharness plugin (loaded by pytest.ini).
The operator runs in this process through `kopf.testing.KopfRunner`, or as a
real `ringkv-operator` process where a test kills it. Nodes are reached
through the resolver seam (`--resolver map:FILE`), which `Kubelet` writes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "operator" / "crds"
TIMEOUT = 60.0  # one central timeout for waits on the operator (STYLE: timeouts module)


@pytest.fixture(scope="session")
def kube(kube_api_client: Any) -> Any:
    from ringkv_operator.k8s import Kube

    return Kube(kube_api_client)


@pytest.fixture(scope="session")
def crds(kube: Any) -> None:
    """Install (or update) the committed CRDs, and wait until they are served."""
    from kubeharness.plugin import wait_for

    from ringkv_operator.k8s import ApiException

    base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        name = crd["metadata"]["name"]
        try:
            kube.request("POST", base, crd)
        except ApiException as exc:
            if exc.status != 409:
                raise
            live = kube.request("GET", f"{base}/{name}")
            crd["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
            kube.request("PUT", f"{base}/{name}", crd)

        def established(name: str = name) -> bool:
            live = kube.request("GET", f"{base}/{name}")
            return any(
                c["type"] == "Established" and c["status"] == "True"
                for c in (live.get("status") or {}).get("conditions") or []
            )

        wait_for(established, timeout=30, what=f"CRD {name} established")


@pytest.fixture
def kubelet(kube: Any, kube_namespace: str, tmp_path: Path) -> Iterator[Any]:
    from kubelet import Kubelet

    k = Kubelet(kube, kube_namespace, tmp_path / "kubelet").start()
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture
def operator_env(
    kubeconfig_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Settings for an operator under test: fast turns, nodes through the kubelet's map."""
    env = {
        "RINGKV_OPERATOR_RESOLVER": f"map:{tmp_path / 'kubelet' / 'urls.json'}",
        "RINGKV_OPERATOR_IDLE_INTERVAL": "2",
        "RINGKV_OPERATOR_BUSY_INTERVAL": "0.5",
        "RINGKV_OPERATOR_NODE_IMAGE": "ringkv/node:test",
        "KUBECONFIG": kubeconfig_env,
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
                    self.namespace,
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


def kvcluster(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ringkv.io/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": name},
        "spec": spec,
    }


def wait_status(
    kube: Any,
    ns: str,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    *,
    timeout: float = TIMEOUT,
    what: str = "status",
) -> dict[str, Any]:
    """Wait until the KVCluster's status satisfies `check`; fail with the last status seen."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = kube.cluster(ns, name) or {}
        status = body.get("status") or {}
        if check(status):
            return status
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last status: {status}")
