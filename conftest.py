"""Fixtures shared by every test folder that talks to the tier-3 API server.

`kube` is the operator's own API seam (`ringkv_operator.k8s.Kube`) as the admin
user; `crds` installs the committed CRDs once a session. The control plane
itself comes from the kubeharness plugin (pytest.ini).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

CRD_DIR = Path(__file__).resolve().parent / "operator" / "crds"


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


# Unit tests (no real processes, API server or kind) take well under a second
# each here, the slowest about two (`-m slow` ones keep pytest.ini's 120 s): a
# unit test that hangs fails in seconds rather than holding the suite for two
# minutes. A test's own timeout mark wins.
UNIT_TIMEOUT_S = 10.0
_NOT_UNIT = ("cluster", "k8s_api", "kind", "slow")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("timeout") is not None:
            continue
        if any(item.get_closest_marker(name) is not None for name in _NOT_UNIT):
            continue
        item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT_S))
