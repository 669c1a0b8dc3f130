"""Tier 4: backups on kind: KVBackups to a PVC and to S3, restored into new
4-replica clusters with every key equal; a scheduled backup firing; restore
drills; and the manifests/examples files that use them.

On one namespace, in order: the test S3 server (moto, in our Python base
image) and the source cluster from manifests/examples/production.yaml (its
figures scaled to kind's 2 cores, its S3 endpoint pointed at the test server,
its schedule made every minute); 10,000 keys through the client Service and
their digest; manifests/examples/backup.yaml (a PVC and a KVBackup with a
restore drill) and a KVBackup to S3; a new 4-replica cluster from each
(by name for the PVC one, from manifests/examples/restore-from-backup.yaml for
the S3 one), whose digest must equal the source's; and the schedule's own
KVBackup completing with retention keeping it. Needs `make e2e`.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubeharness.kind import Kubectl

from kindlib import (
    NODE_ENV,
    READY_TIMEOUT,
    ROOT,
    install_client_script,
    namespace,
    patch_kvc,
    ready,
    run_client,
    status,
    user_env,
    wait,
)

pytestmark = [pytest.mark.kind, pytest.mark.timeout(2400)]

S3_IMAGE = "ringkv/s3:e2e"
BACKUP_TIMEOUT = 300.0
EXAMPLES = ROOT / "manifests" / "examples"


def _example(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def _s3_server(kubectl: Kubectl, ns: str) -> str:
    labels = {"app": "s3"}
    kubectl.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "s3", "labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "s3",
                            "image": S3_IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "env": [{"name": "S3_BUCKETS", "value": "my-ringkv-backups"}],
                            "ports": [{"containerPort": 5000}],
                            "readinessProbe": {"tcpSocket": {"port": 5000}, "periodSeconds": 2},
                        }
                    ]
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "s3"},
                "spec": {"selector": labels, "ports": [{"port": 5000, "targetPort": 5000}]},
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "kv-s3"},
                "stringData": {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"},
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "kv-token"},
                "stringData": {"token": "e2e-backup-token-0123456789abcdef"},
            },
        ],
        ns,
    )
    wait(
        lambda: (
            kubectl.run(
                "wait", "--for=condition=Ready", "pod/s3", "-n", ns, "--timeout=5s", check=False
            ).returncode
            == 0
        ),
        120,
        "the S3 server",
    )
    return f"http://s3.{ns}.svc.cluster.local:5000"


def _for_kind(doc: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """An example KVCluster with what kind cannot give scaled down (it has two
    cores and no zones) and the S3 endpoint of the test server; the rest as written."""
    doc = copy.deepcopy(doc)
    spec = doc["spec"]
    spec["replicas"] = min(spec.get("replicas", 3), 4)
    spec["resources"] = {"requests": {"cpu": "50m", "memory": "128Mi"}}
    spec["storage"] = {**spec.get("storage", {}), "size": "1Gi"}
    spec["partitions"] = 64
    spec["env"] = NODE_ENV
    for s3 in (
        ((spec.get("backup") or {}).get("destination") or {}).get("s3"),
        ((spec.get("bootstrap") or {}).get("fromBackup") or {}).get("s3"),
    ):
        if s3 is not None:
            s3.update(endpoint=endpoint, pathStyle=True)
    return doc


def _kvb(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    return dict(kubectl.get_json("kvb", name, "-n", ns).get("status") or {})


def _completed(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    def done() -> Any:
        st = _kvb(kubectl, ns, name)
        return st if st.get("phase") in ("Completed", "Failed") else False

    st = wait(done, BACKUP_TIMEOUT, f"KVBackup {name} to finish")
    assert st["phase"] == "Completed", st
    return dict(st)


@pytest.fixture(scope="module")
def ns(kubectl: Kubectl, operator: None, request: pytest.FixtureRequest) -> Iterator[str]:
    with namespace(kubectl, "e2e-bk", request) as name:
        install_client_script(kubectl, name)
        yield name
        kubectl.run("delete", "kvb", "--all", "-n", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def source(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    """The production example's cluster with 10,000 keys, and their digest."""
    endpoint = _s3_server(kubectl, ns)
    (production,) = _example("production.yaml")
    doc = _for_kind(production, endpoint)
    doc["spec"]["replicas"] = 3
    doc["spec"]["backup"]["suspend"] = True  # the schedule's test comes last
    kubectl.apply(doc, ns)
    wait(ready(kubectl, ns, readyReplicas=3), READY_TIMEOUT, "the production example Ready")
    load = run_client(kubectl, ns, "load", ["load", "10000"], secret="kv-token")
    assert load["acked"] == 10000 and load["lost"] == 0, load
    digest = run_client(kubectl, ns, "digest-src", ["digest"], secret="kv-token")
    assert digest["keys"] == 10000
    return {"endpoint": endpoint, "digest": digest, "doc": doc}


def _restored(
    kubectl: Kubectl, ns: str, name: str, doc: dict[str, Any], want: dict[str, Any]
) -> dict[str, Any]:
    kubectl.apply(doc, ns)
    phases: list[str] = []

    def check() -> Any:
        st = status(kubectl, ns, name)
        phase = st.get("phase")
        if phase and (not phases or phases[-1] != phase):
            phases.append(phase)
        if phase == "Ready":
            assert (st.get("restore") or {}).get("phase") == "Completed", st  # never before
            return st
        return False

    st = wait(check, READY_TIMEOUT + BACKUP_TIMEOUT, f"{name} restored and Ready")
    assert "Restoring" in phases, phases
    assert st["readyReplicas"] == 4 and st["members"] == 4
    got = run_client(kubectl, ns, f"digest-{name}", ["digest"], cluster=name)
    assert got == want, (got, want)
    return dict(st)


def test_backup_to_a_pvc_with_a_drill_restored_into_four_replicas(
    kubectl: Kubectl, ns: str, source: dict[str, Any]
) -> None:
    kubectl.apply(_example("backup.yaml"), ns)
    st = _completed(kubectl, ns, "kv-manual")
    assert st["location"] == "pvc://kv-backups/kv-manual"
    assert st["keys"] >= 10000 and st["sizeBytes"] > 0
    assert st["verified"].startswith("restore drill passed"), st["verified"]
    kvc = wait(
        lambda: (
            (status(kubectl, ns).get("lastBackup") or {}).get("name") == "kv-manual"
            and status(kubectl, ns)
        ),
        60,
        "status.lastBackup",
    )
    assert {c["type"]: c["status"] for c in kvc["conditions"]}["BackupReady"] == "True"
    doc = {
        "apiVersion": "ringkv.io/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": "kv-from-pvc"},
        "spec": {
            "replicas": 4,
            "partitions": 64,
            "env": NODE_ENV,
            "bootstrap": {"fromBackup": {"name": "kv-manual"}},
        },
    }
    _restored(kubectl, ns, "kv-from-pvc", doc, source["digest"])
    kubectl.run("delete", "kvc", "kv-from-pvc", "-n", ns, "--wait=true", timeout=180)


def test_backup_to_s3_restored_from_the_example_into_four_replicas(
    kubectl: Kubectl, ns: str, source: dict[str, Any]
) -> None:
    backup = {
        "apiVersion": "ringkv.io/v1alpha1",
        "kind": "KVBackup",
        "metadata": {"name": "kv-s3"},
        "spec": {"cluster": "kv", "destination": source["doc"]["spec"]["backup"]["destination"]},
    }
    kubectl.apply(backup, ns)
    st = _completed(kubectl, ns, "kv-s3")
    assert st["location"] == "s3://my-ringkv-backups/kv/kv-s3"
    (example,) = _example("restore-from-backup.yaml")
    doc = _for_kind(example, source["endpoint"])
    doc["spec"]["bootstrap"]["fromBackup"]["location"] = st["location"]
    _restored(kubectl, ns, "kv-restored", doc, source["digest"])
    kubectl.run("delete", "kvc", "kv-restored", "-n", ns, "--wait=true", timeout=180)


def test_kubectl_ringkv_backup_follows_a_backup_to_the_end(
    kubectl: Kubectl, ns: str, source: dict[str, Any]
) -> None:
    r = subprocess.run(
        [kubectl.binary, "ringkv", "backup", "kv", "-n", ns, "--pvc", "kv-backups",
         "--name", "kv-plugin", "--timeout", str(BACKUP_TIMEOUT)],
        capture_output=True, text=True, timeout=BACKUP_TIMEOUT + 60, env=user_env(kubectl),
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    assert lines[0] == "kvbackup/kv-plugin created"
    assert "Completed" in lines[-1] and "at pvc://kv-backups/kv-plugin" in lines[-1], lines
    print(f"\n    e2e: kubectl ringkv backup: {lines[-1]}")


def test_the_schedule_fires_and_retention_keeps_it(
    kubectl: Kubectl, ns: str, source: dict[str, Any]
) -> None:
    patch_kvc(kubectl, ns, "kv", {"spec": {"backup": {"suspend": False, "schedule": "* * * * *"}}})

    def scheduled() -> Any:
        items = kubectl.get_json("kvb", "-n", ns, "-l", "ringkv.io/scheduled=true")["items"]
        return [i["metadata"]["name"] for i in items] or False

    names = wait(scheduled, 150, "a scheduled KVBackup")
    patch_kvc(kubectl, ns, "kv", {"spec": {"backup": {"suspend": True}}})
    st = _completed(kubectl, ns, names[0])
    assert st["location"].startswith("s3://my-ringkv-backups/kv/kv-")
    kvc = status(kubectl, ns)
    assert kvc["backup"]["lastScheduleTime"] and kvc["backup"]["nextScheduleTime"]
    # retention (keepLast 3 and tiers) keeps a newest one whatever else it prunes
    left = kubectl.get_json("kvb", "-n", ns, "-l", "ringkv.io/scheduled=true")["items"]
    assert names[0] in {i["metadata"]["name"] for i in left}
