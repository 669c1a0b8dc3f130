"""A real scale, 3 -> 4 -> 3, driven end to end by the operator on the tier-3 API server.

The StatefulSet controller (kube-controller-manager) makes the pods; the
test's `Kubelet` runs a real `ringkv-node` for each one on 127.0.0.1 and
reports it Ready; the operator, a real `ringkv-operator` process, reaches the
nodes through its resolver seam. A writer runs throughout and every write it
had acknowledged must read back at the end. In the middle of the first
rebalance the operator is SIGKILLed (after some nodes took the joining ring,
before any committed it) and a new one must finish the job.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from typing import Any

import pytest
from kubeharness.plugin import wait_for

from ringkv import Client
from ringkv.errors import RingkvError
from ringkv_operator.model import GROUP, PLURAL, VERSION

from optest import kvcluster, wait_status

pytestmark = [pytest.mark.k8s_api, pytest.mark.slow, pytest.mark.timeout(420)]

SCALE_TIMEOUT = 150.0
NODE_ENV = [
    {"name": "RINGKV_DROP_DELAY", "value": "1s"},
    {"name": "RINGKV_ANTI_ENTROPY_INTERVAL", "value": "2s"},
    {"name": "RINGKV_HINT_INTERVAL", "value": "200ms"},
    {"name": "RINGKV_REPLICA_TIMEOUT", "value": "1s"},
    {"name": "RINGKV_MAP_SIZE", "value": "256Mi"},
]


class Writer(threading.Thread):
    """Puts fresh keys at quorum until stopped; remembers the acknowledged ones."""

    def __init__(self, seeds: list[str], token: str) -> None:
        super().__init__(name="writer", daemon=True)
        self.client = Client(seeds, token=token, timeout=5.0)
        self.acked: dict[str, bytes] = {}
        self.failed = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop_flag.is_set():
            key, value = f"k{n:06d}", f"v{n}".encode() * 8
            n += 1
            try:
                self.client.put(key, value)
            except RingkvError:
                self.failed += 1
                time.sleep(0.05)
                continue
            self.acked[key] = value

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(30)
        self.client.close()


def progress(url: str, token: str) -> dict[str, Any]:
    req = urllib.request.Request(
        url + "/admin/v1/rebalance", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=2) as resp:
        return dict(json.loads(resp.read()))


def test_scale_up_and_down_with_a_writer_and_an_operator_killed_mid_rebalance(
    kube: Any,
    kube_controller_manager: Any,
    kube_namespace: str,
    kubelet: Any,
    operator_process: Any,
) -> None:
    ns = kube_namespace
    op = operator_process()
    op.start()
    kube.request(
        "POST",
        f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}",
        kvcluster("kv", replicas=3, partitions=64, env=NODE_ENV),
    )
    try:
        status = wait_status(
            kube, ns, "kv", lambda s: s.get("phase") == "Ready", timeout=90, what="Ready"
        )
        assert (status["ringEpoch"], status["members"], status["readyReplicas"]) == (1, 3, 3)
        secret = kube.read("Secret", ns, "kv-auth")
        token = base64.b64decode(secret["data"]["token"]).decode()
        seeds = [kubelet.url(f"kv-{i}") for i in range(3)]
        writer = Writer(seeds, token)
        writer.start()
        wait_for(lambda: len(writer.acked) > 500, timeout=30, what="500 writes before scaling")

        # 3 -> 4, through the scale subresource as `kubectl scale` does
        scale = f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}/kv/scale"
        kube.request(
            "PATCH", scale, {"spec": {"replicas": 4}}, content_type="application/merge-patch+json"
        )

        def joining() -> bool:
            try:
                return progress(kubelet.url("kv-0"), token).get("pending_epoch") == 2
            except OSError:
                return False

        wait_for(joining, timeout=60, interval=0.02, what="kv-0 to take the joining ring")
        op.kill()  # in the middle: joined, not committed
        states = [progress(kubelet.url(f"kv-{i}"), token) for i in range(4)]
        assert all(s["epoch"] == 1 for s in states), states  # nothing committed yet
        op2 = operator_process()
        op2.start()
        status = wait_status(
            kube,
            ns,
            "kv",
            lambda s: s.get("phase") == "Ready" and s.get("ringEpoch") == 2,
            timeout=SCALE_TIMEOUT,
            what="Ready at epoch 2 after the restarted operator finished the rebalance",
        )
        assert status["members"] == 4 and status["readyReplicas"] == 4
        assert status["rebalance"]["state"] == "Done" and status["rebalance"]["toMembers"] == 4
        ring = writer.client.ring()
        assert set(ring.member_ids) == {"kv-0", "kv-1", "kv-2", "kv-3"}

        # 4 -> 3: data moves off kv-3 first, then the StatefulSet shrinks
        kube.request(
            "PATCH", scale, {"spec": {"replicas": 3}}, content_type="application/merge-patch+json"
        )
        status = wait_status(
            kube,
            ns,
            "kv",
            lambda s: (
                s.get("phase") == "Ready" and s.get("ringEpoch") == 3 and s.get("replicas") == 3
            ),
            timeout=SCALE_TIMEOUT,
            what="Ready at epoch 3 with 3 pods",
        )
        assert status["members"] == 3
        assert kube.read("StatefulSet", ns, "kv")["spec"]["replicas"] == 3
        assert kube.read("PersistentVolumeClaim", ns, "data-kv-3") is not None  # Retain
        writer.stop()
        assert len(writer.acked) > 1000, (len(writer.acked), writer.failed)
        with Client(seeds, token=token) as reader:
            lost = [k for k, v in writer.acked.items() if reader.get(k) != v]
        assert lost == [], f"{len(lost)} of {len(writer.acked)} acknowledged writes lost"
        events = kube.list("Event", ns)
        reasons = {e["reason"] for e in events if e["involvedObject"]["name"] == "kv"}
        assert {"Ready", "Rebalancing"} <= reasons, reasons
    except BaseException:
        writer_ = locals().get("writer")
        if writer_ is not None:
            writer_.stop()
        print(operator_process.output())
        print(kubelet.logs())
        raise
