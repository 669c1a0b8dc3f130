"""Tier 4: the operator on kind, installed from manifests/, managing a real KVCluster.

In order, on one cluster (each step starts from where the one before left it):
install with `kubectl apply -f manifests/` and reach Ready; an in-cluster Job
writes 10,000 keys through the client Service's DNS name and reads them back;
`kubectl scale` 3 -> 5 -> 3 while an in-cluster writer runs; a deleted pod
comes back with its claim's data while the writer measures the longest window
of failed quorum writes; a new image tag rolls the pods with zero failed
writes; `kubectl get` and `describe` show the columns, conditions and events.
Needs `make e2e` (images built and loaded into kind).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubeharness.kind import Kubectl, cluster_name

from kindlib import (
    NODE_ENV,
    NODE_IMAGE,
    READY_TIMEOUT,
    ROOT,
    SCALE_TIMEOUT,
    Writer,
    client_pod,
    install_client_script,
    namespace,
    patch_kvc,
    ready,
    status,
    summary,
    wait,
)

pytestmark = [pytest.mark.kind, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def ns(kubectl: Kubectl, operator: None, request: pytest.FixtureRequest) -> Iterator[str]:
    with namespace(kubectl, "e2e-op", request) as name:
        install_client_script(kubectl, name)
        yield name


def scale(kubectl: Kubectl, ns: str, replicas: int) -> None:
    kubectl.run("scale", "kvc/kv", "-n", ns, f"--replicas={replicas}")


def test_install_and_ready(kubectl: Kubectl, ns: str) -> None:
    kubectl.apply(
        {
            "apiVersion": "ringkv.io/v1alpha1",
            "kind": "KVCluster",
            "metadata": {"name": "kv"},
            "spec": {"replicas": 3, "partitions": 64, "env": NODE_ENV},
        },
        ns,
    )
    st = wait(ready(kubectl, ns, readyReplicas=3), READY_TIMEOUT, "KVCluster Ready")
    assert st["ringEpoch"] == 1 and st["members"] == 3
    conditions = {c["type"]: c["status"] for c in st["conditions"]}
    assert conditions["Ready"] == "True" and conditions["Degraded"] == "False"


def test_a_job_writes_10000_keys_through_the_service(
    kubectl: Kubectl, ns: str, report: Callable[[str], None]
) -> None:
    pod = client_pod("load", ["load", "10000"])
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "load"},
        "spec": {
            "backoffLimit": 0,
            "template": {"metadata": pod["metadata"], "spec": pod["spec"]},
        },
    }
    kubectl.apply(job, ns)

    def finished() -> str:
        conditions = kubectl.get_json("job", "load", "-n", ns).get("status", {}).get("conditions")
        done = [c["type"] for c in conditions or [] if c["status"] == "True"]
        return next((c for c in done if c in ("Complete", "Failed")), "")

    outcome = wait(finished, 600, "the load Job")
    result = summary(kubectl, ns, "job/load")
    report(f"a Job put 10,000 keys through the Service and read them back: {result}")
    assert outcome == "Complete", result
    assert result["acked"] == 10000 and result["lost"] == 0


def test_scale_3_5_3_with_a_writer(
    kubectl: Kubectl, ns: str, report: Callable[[str], None]
) -> None:
    epochs = [status(kubectl, ns)["ringEpoch"]]
    with Writer(kubectl, ns, "writer-scale") as writer:
        scale(kubectl, ns, 5)
        st = wait(ready(kubectl, ns, members=5, readyReplicas=5), SCALE_TIMEOUT, "5 members")
        epochs.append(st["ringEpoch"])
        scale(kubectl, ns, 3)
        st = wait(ready(kubectl, ns, members=3, replicas=3), SCALE_TIMEOUT, "back to 3 members")
        epochs.append(st["ringEpoch"])
        result = writer.stop()
    assert epochs[0] < epochs[1] < epochs[2], epochs
    report(f"scale 3 -> 5 -> 3, epochs {epochs}: writer {result}")
    sts = kubectl.get_json("statefulset", "kv", "-n", ns)
    assert sts["spec"]["replicas"] == 3
    assert result["acked"] > 0 and result["lost"] == 0, result


def test_a_deleted_pod_comes_back_with_its_data(
    kubectl: Kubectl, ns: str, report: Callable[[str], None]
) -> None:
    before = kubectl.get_json("pvc", "data-kv-1", "-n", ns)["metadata"]["uid"]
    pod_uid = kubectl.get_json("pod", "kv-1", "-n", ns)["metadata"]["uid"]
    with Writer(kubectl, ns, "writer-delete") as writer:
        kubectl.run("delete", "pod", "kv-1", "-n", ns, "--wait=false")
        wait(
            lambda: kubectl.get_json("pod", "kv-1", "-n", ns)["metadata"]["uid"] != pod_uid,
            120,
            "kv-1 recreated",
        )
        wait(ready(kubectl, ns, readyReplicas=3), READY_TIMEOUT, "Ready again")
        live = json.loads(
            kubectl.exec(
                ns,
                "kv-1",
                "python3",
                "-c",
                "import json,urllib.request,os;"
                "r=urllib.request.Request('http://127.0.0.1:8080/v1/status',"
                "headers={'Authorization':'Bearer '+os.environ['RINGKV_TOKEN']});"
                "print(json.dumps(json.load(urllib.request.urlopen(r))['storage']))",
            )
        )
        result = writer.stop()
    report(
        f"pod kv-1 deleted: longest window of failed quorum writes {result['worst_gap_s']} s; "
        f"node after restart {live}; writer {result}"
    )
    assert kubectl.get_json("pvc", "data-kv-1", "-n", ns)["metadata"]["uid"] == before
    assert live["live"] >= 10000, live  # its claim's data, not a refill from scratch
    assert result["lost"] == 0, result


def test_an_image_change_rolls_with_zero_failed_writes(
    kubectl: Kubectl, ns: str, report: Callable[[str], None]
) -> None:
    tag = NODE_IMAGE.rsplit(":", 1)[0] + ":e2e-rolled"
    subprocess.run(["docker", "tag", NODE_IMAGE, tag], check=True, timeout=60)
    cache = Path(os.environ.get("RINGKV_CACHE", Path.home() / ".cache" / "ringkv"))
    kind = str(cache / "bin" / "kind")
    subprocess.run(
        [kind, "load", "docker-image", "--name", cluster_name(), tag],
        check=True,
        timeout=300,
        capture_output=True,
    )
    with Writer(kubectl, ns, "writer-roll") as writer:
        patch_kvc(kubectl, ns, "kv", {"spec": {"image": tag}})

        def rolled() -> bool:
            pods = kubectl.get_json("pods", "-n", ns, "-l", "app.kubernetes.io/instance=kv")
            images = [p["spec"]["containers"][0]["image"] for p in pods["items"]]
            st = status(kubectl, ns)
            return (
                len(images) == 3
                and all(i == tag for i in images)
                and st.get("phase") == "Ready"
                and st.get("readyReplicas") == 3
            )

        wait(rolled, SCALE_TIMEOUT, "every pod rolled to the new tag")
        result = writer.stop()
    report(f"rolling upgrade to {tag}: writer {result}")
    assert result["failed"] == 0 and result["read_failed"] == 0, result
    assert result["lost"] == 0 and result["read_wrong"] == 0, result


def test_kubectl_get_and_describe(kubectl: Kubectl, ns: str, report: Callable[[str], None]) -> None:
    table = kubectl.run("get", "kvc", "-n", ns).stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "REPLICAS", "READY", "PHASE", "EPOCH", "LASTBACKUP", "AGE"], table
    row = table.splitlines()[1].split()
    assert row[:4] == ["kv", "3", "3", "Ready"], table
    described = kubectl.run("describe", "kvc", "kv", "-n", ns).stdout
    assert "Conditions:" in described and "Events:" in described, described
    assert "Rebalancing" in described
    report("kubectl get kvc:\n" + table)


def test_the_minimal_example_reaches_ready(kubectl: Kubectl, ns: str) -> None:
    kubectl.run("apply", "-n", ns, "-f", str(ROOT / "manifests" / "examples" / "minimal.yaml"))
    st = wait(ready(kubectl, ns, "minimal", readyReplicas=3), READY_TIMEOUT, "minimal Ready")
    assert st["members"] == 3
    kubectl.run("delete", "kvc", "minimal", "-n", ns, "--wait=true", timeout=180)
