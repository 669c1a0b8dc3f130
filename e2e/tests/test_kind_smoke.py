"""Tier-4 smoke: our node image as a StatefulSet on the kind cluster.

Three pods of ``ringkv/node:e2e`` with volumeClaimTemplates and a headless
Service. Every pod resolves ``<sts>-<i>.<svc>.<ns>.svc.cluster.local`` of its
peers through CoreDNS and gets 200 from their ``/healthz``; a deleted pod comes
back with the data of its PVC. Needs ``make kind-up images`` and
``kind-up.sh load`` first (``make e2e-smoke`` does all of it).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubeharness.kind import Kubectl

pytestmark = [pytest.mark.kind, pytest.mark.timeout(900)]

IMAGE = os.environ.get("NODE_IMAGE", "ringkv/node:e2e")
STS, SVC, REPLICAS = "kv", "kv-peers", 3
IMAGE_ERRORS = {"ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "InvalidImageName"}


@pytest.fixture(scope="module")
def kubectl(kind_kubectl: Kubectl) -> Kubectl:
    return kind_kubectl


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    ns = f"e2e-{secrets.token_hex(3)}"
    kubectl.run("create", "namespace", ns)
    yield ns
    report = getattr(request.node, "rep_call", None)  # set by kubeharness.plugin
    if report is None or report.failed:
        print(kubectl.diagnostics(ns))  # shown by pytest for the failed test
    kubectl.run("delete", "namespace", ns, "--wait=false", check=False)


def fqdn(i: int, ns: str) -> str:
    return f"{STS}-{i}.{SVC}.{ns}.svc.cluster.local"


def manifests(ns: str) -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": "ringkv", "app.kubernetes.io/instance": STS, "e2e": "1"}
    peers = ",".join(f"{STS}-{i}=http://{fqdn(i, ns)}:8080" for i in range(REPLICAS))
    env = {
        "RINGKV_PEERS": peers,
        "RINGKV_REPLICATION_FACTOR": "3",
        "RINGKV_PARTITIONS": "16",
        "RINGKV_DATA_DIR": "/data",
        "RINGKV_MAP_SIZE": "64Mi",
        "RINGKV_LISTEN": "0.0.0.0:8080",
        "RINGKV_TOKEN": f"e2e-{ns}",  # several nodes need a cluster token (auth between peers)
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SVC, "labels": labels},
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "selector": labels,
                "ports": [{"name": "http", "port": 8080}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": STS, "labels": labels},
            "spec": {
                "replicas": REPLICAS,
                "serviceName": SVC,
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 10,
                        "containers": [
                            {
                                "name": "node",
                                "image": IMAGE,
                                "imagePullPolicy": "Never",
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "env": [
                                    {
                                        "name": "RINGKV_NODE_ID",
                                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                    },
                                    {
                                        "name": "RINGKV_ADVERTISE_URL",
                                        "value": f"http://$(RINGKV_NODE_ID).{SVC}.{ns}"
                                        ".svc.cluster.local:8080",
                                    },
                                    *({"name": k, "value": v} for k, v in env.items()),
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": "/healthz", "port": "http"},
                                    "periodSeconds": 2,
                                },
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            }
                        ],
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "64Mi"}},
                        },
                    }
                ],
            },
        },
    ]


# Runs inside a pod with the image's Python: resolve each peer through the pod's
# resolver (CoreDNS) and GET its /healthz.
PROBE = """
import json, socket, sys, urllib.request
out = {}
for name in sys.argv[1:]:
    r = {}
    try:
        r["ips"] = sorted({a[4][0] for a in socket.getaddrinfo(name, 8080, socket.AF_INET)})
        with urllib.request.urlopen(f"http://{name}:8080/healthz", timeout=5) as resp:
            r["status"] = resp.status
    except Exception as e:
        r["error"] = repr(e)
    out[name] = r
print(json.dumps(out))
"""


def wait_ready(kubectl: Kubectl, ns: str, timeout: float = 300) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    pods: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        items = kubectl.get_json("pods", "-n", ns, "-l", "e2e=1")["items"]
        pods = {p["metadata"]["name"]: p for p in items}
        ready = [
            n
            for n, p in pods.items()
            if p["metadata"].get("deletionTimestamp") is None
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        ]
        if len(ready) == REPLICAS:
            return pods
        problems = [
            f"{n}: {w['reason']}"
            for n, p in pods.items()
            for c in p["status"].get("containerStatuses", [])
            if (w := c.get("state", {}).get("waiting")) and w.get("reason") in IMAGE_ERRORS
        ]
        if problems:
            pytest.fail(f"{problems}: is {IMAGE} loaded? (e2e/cluster/kind-up.sh load)")
        crashing = [
            n
            for n, p in pods.items()
            for c in p["status"].get("containerStatuses", [])
            if c["restartCount"] >= 3
        ]
        if crashing:
            logs = kubectl.run(
                "logs", "-n", ns, crashing[0], "--previous", "--tail=20", check=False
            )
            pytest.fail(f"pods restarting: {crashing}; last log of {crashing[0]}:\n{logs.stdout}")
        time.sleep(2)
    states = {n: p["status"].get("phase") for n, p in pods.items()}
    pytest.fail(f"pods not ready after {timeout:.0f} s: {states}")


def test_statefulset_dns_health_and_pvc_persistence(kubectl: Kubectl, namespace: str) -> None:
    ns = namespace
    kubectl.apply(manifests(ns), ns)
    pods = wait_ready(kubectl, ns)

    # PVCs bound by the default StorageClass, one per pod.
    pvcs = kubectl.get_json("pvc", "-n", ns)["items"]
    bound = {c["metadata"]["name"]: c["spec"].get("volumeName") for c in pvcs}
    assert set(bound) == {f"data-{STS}-{i}" for i in range(REPLICAS)}
    assert all(c["status"]["phase"] == "Bound" for c in pvcs)

    # Each pod resolves its peers' per-pod DNS names through CoreDNS and gets 200.
    for i in range(REPLICAS):
        peers = [fqdn(j, ns) for j in range(REPLICAS) if j != i]
        out = json.loads(kubectl.exec(ns, f"{STS}-{i}", "python3", "-c", PROBE, *peers))
        for j in (j for j in range(REPLICAS) if j != i):
            want_ip = pods[f"{STS}-{j}"]["status"]["podIP"]
            assert out[fqdn(j, ns)] == {"ips": [want_ip], "status": 200}, (i, j, out)

    # A pod deleted and recreated keeps its PVC and the data on it.
    marker = secrets.token_hex(8)
    victim = f"{STS}-1"
    write = f"open('/data/e2e-marker', 'w').write('{marker}')"
    kubectl.exec(ns, victim, "python3", "-c", write)
    old_uid = pods[victim]["metadata"]["uid"]
    kubectl.run("delete", "pod", "-n", ns, victim, "--wait=true", timeout=120)
    pods = wait_ready(kubectl, ns)
    assert pods[victim]["metadata"]["uid"] != old_uid
    read = "print(open('/data/e2e-marker').read())"
    assert kubectl.exec(ns, victim, "python3", "-c", read).strip() == marker
    pvc = kubectl.get_json("pvc", "-n", ns, f"data-{victim}")
    assert pvc["spec"]["volumeName"] == bound[f"data-{victim}"]
    # The node's own LMDB files survived too (it reopened them at start).
    listing = kubectl.exec(ns, victim, "python3", "-c", "import os; print(os.listdir('/data'))")
    assert "e2e-marker" in listing
