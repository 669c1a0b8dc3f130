"""pytest fixtures for tier 3 (a real kube-apiserver on loopback).

Load with ``pytest_plugins = ["kubeharness.plugin"]`` in a root conftest, with
``-p kubeharness.plugin``, or by star-importing this module in a conftest
(what ``e2e/conftest.py`` does). ``e2e/`` must be on ``sys.path``.

Fixtures:
  kube_control_plane       session: etcd + kube-apiserver, started once
  kube_controller_manager  session: adds kube-controller-manager to it
  kube_api_client          session: kubernetes.client.ApiClient as system:masters
  kube_namespace           function: a fresh namespace, deleted afterwards
  kubeconfig_env           function: KUBECONFIG set to the control plane's (for kopf, kubectl)
  kind_kubectl             session: a Kubectl for the kind cluster (tier 4)

When the binaries are missing the tests are skipped, unless
``RINGKV_REQUIRE_K8S=1`` (set by ``make test``), which turns that into a failure.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ._assets import MissingBinaryError, find_binaries
from ._controlplane import ControlPlane

_MARKERS = (
    "k8s_api: tier 3, needs etcd + kube-apiserver (make k8s-test-bins)",
    "kind: tier 4, needs a kind cluster (make kind-up); run by make e2e only",
)


def pytest_configure(config: pytest.Config) -> None:
    for line in _MARKERS:
        config.addinivalue_line("markers", line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)  # lets fixtures see whether the test failed
    cp = getattr(item, "funcargs", {}).get("kube_control_plane")
    if report.failed and isinstance(cp, ControlPlane):
        report.sections.append(("kube control plane logs", cp.logs(lines=40)))


@pytest.fixture(scope="session")
def kube_control_plane() -> Iterator[ControlPlane]:
    try:
        binaries = find_binaries(controller_manager=False)
    except MissingBinaryError as e:
        if os.environ.get("RINGKV_REQUIRE_K8S") == "1":
            pytest.fail(str(e), pytrace=False)
        pytest.skip(str(e))
    cp = ControlPlane(binaries=binaries)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kube_controller_manager(kube_control_plane: ControlPlane) -> ControlPlane:
    try:
        find_binaries(controller_manager=True)
    except MissingBinaryError as e:
        if os.environ.get("RINGKV_REQUIRE_K8S") == "1":
            pytest.fail(str(e), pytrace=False)
        pytest.skip(str(e))
    kube_control_plane.start_controller_manager()
    return kube_control_plane


@pytest.fixture(scope="session")
def kube_api_client(kube_control_plane: ControlPlane) -> Iterator[Any]:
    kubernetes = pytest.importorskip("kubernetes", reason="pip install -r e2e/requirements.txt")
    client = kubernetes.config.new_client_from_config(
        config_file=str(kube_control_plane.kubeconfig)
    )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def kind_kubectl() -> Any:
    """`kubeharness.kind.Kubectl` for the kind cluster of `make kind-up`; skipped without
    one, unless ``RINGKV_REQUIRE_KIND=1`` (set by ``make e2e``) makes that a failure."""
    from .kind import Kubectl, kubeconfig_path

    path = kubeconfig_path()
    if not path.exists():
        msg = f"no kind kubeconfig at {path}: run `make kind-up` (or make e2e)"
        if os.environ.get("RINGKV_REQUIRE_KIND") == "1":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return Kubectl(path)


@pytest.fixture
def kubeconfig_env(kube_control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(kube_control_plane.kubeconfig)
    monkeypatch.setenv("KUBECONFIG", path)
    return path


@pytest.fixture
def kube_namespace(kube_api_client: Any) -> Iterator[str]:
    from kubernetes import client as k

    name = f"t-{secrets.token_hex(4)}"
    core = k.CoreV1Api(kube_api_client)
    core.create_namespace(k.V1Namespace(metadata=k.V1ObjectMeta(name=name)))
    # The namespace is "Active" at once; the ServiceAccount admission plugin is
    # off, so no need to wait for a default ServiceAccount.
    try:
        yield name
    finally:
        core.delete_namespace(name, _request_timeout=10)


def wait_for(
    predicate: Any, *, timeout: float, interval: float = 0.2, what: str = "condition"
) -> Any:
    """Poll ``predicate()`` until it returns a truthy value; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last value: {last!r})")
