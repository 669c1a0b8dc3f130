"""The `ringkv-operator` process on the tier-3 API server: one leader, probes, metrics, SIGTERM;
and volume expansion reported where it cannot happen."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubeharness import free_port
from kubeharness.plugin import wait_for

from ringkv_operator.model import GROUP, PLURAL, VERSION

from optest import kvcluster, wait_status

pytestmark = [pytest.mark.k8s_api, pytest.mark.timeout(240)]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def create(kube: Any, ns: str, name: str, **spec: Any) -> None:
    kube.request(
        "POST", f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}", kvcluster(name, **spec)
    )


def test_one_leader_at_a_time_probes_metrics_and_sigterm(
    kube: Any, kube_controller_manager: Any, kube_namespace: str, operator_process: Any
) -> None:
    ns = kube_namespace
    ports = [(free_port(), free_port()) for _ in range(2)]
    first, second = operator_process(), operator_process()
    first.start("--health-port", str(ports[0][0]), "--metrics-port", str(ports[0][1]))
    wait_for(
        lambda: get(f"http://127.0.0.1:{ports[0][0]}/readyz")[0] == 200,
        timeout=30,
        what="the first operator ready",
    )
    second.start("--health-port", str(ports[1][0]), "--metrics-port", str(ports[1][1]))
    wait_for(
        lambda: get(f"http://127.0.0.1:{ports[1][0]}/healthz")[0] == 200,
        timeout=30,
        what="the second operator alive",
    )
    time.sleep(2)
    # waiting for the Lease, and ready (a rolling update must be able to replace the leader)
    assert get(f"http://127.0.0.1:{ports[1][0]}/readyz")[0] == 200
    assert "another instance leads" in second.output()
    lease = kube.read("Lease", "ringkv-system", ns)
    assert lease["spec"]["holderIdentity"].endswith(f"_{first.proc.pid}")

    create(kube, ns, "one")
    wait_for(lambda: kube.read("StatefulSet", ns, "one"), timeout=30, what="StatefulSet one")
    metrics = f"http://127.0.0.1:{ports[0][1]}/metrics"
    text = wait_for(
        lambda: (lambda s, t: t if s == 200 and 'reconciles_total{result="ok"}' in t else "")(
            *get(metrics)
        ),
        timeout=30,
        what="a counted reconcile in /metrics",
    )
    assert "ringkv_operator_leader 1.0" in text
    assert "ringkv_operator_reconcile_duration_seconds_count" in text
    assert "another instance leads" in second.output()

    first.kill()  # no release: the second takes over once the Lease expires
    wait_for(
        lambda: "became the leader" in second.output(),
        timeout=30,
        what="the second operator to take the Lease",
    )
    create(kube, ns, "two")
    wait_for(lambda: kube.read("StatefulSet", ns, "two"), timeout=30, what="StatefulSet two")
    lease = kube.read("Lease", "ringkv-system", ns)
    assert lease["spec"]["holderIdentity"].endswith(f"_{second.proc.pid}")
    assert lease["spec"]["leaseTransitions"] >= 1

    assert second.stop() == 0  # SIGTERM: the turn in flight ends, the Lease is released
    assert kube.read("Lease", "ringkv-system", ns)["spec"]["holderIdentity"] == ""


def test_volume_expansion_that_cannot_happen_is_a_condition(
    kube: Any, kube_controller_manager: Any, kube_namespace: str, operator: Any
) -> None:
    ns = kube_namespace
    create(kube, ns, "kv")
    wait_for(lambda: len(kube.list("PersistentVolumeClaim", ns)) == 3, timeout=30, what="3 claims")
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}/kv"
    kube.request(
        "PATCH",
        path,
        {"spec": {"storage": {"size": "2Gi"}}},
        content_type="application/merge-patch+json",
    )

    def expansion(s: dict[str, Any]) -> bool:
        return any(c["type"] == "VolumeExpansion" for c in s.get("conditions") or [])

    status = wait_status(kube, ns, "kv", expansion, what="a VolumeExpansion condition")
    cond = next(c for c in status["conditions"] if c["type"] == "VolumeExpansion")
    assert cond["status"] == "False" and cond["reason"] == "ExpansionRefused"
    assert "data-kv-0" in cond["message"] and "no StorageClass" in cond["message"]
    for pvc in kube.list("PersistentVolumeClaim", ns):
        assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
