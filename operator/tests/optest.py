"""Helpers of the operator's tier-3 tests (a module, not the conftest: there are two conftests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

TIMEOUT = 60.0  # one central timeout for waits on the operator


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
