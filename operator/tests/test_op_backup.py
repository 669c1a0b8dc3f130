"""Backups through the operator on the tier-3 API server, with real processes.

The Job controller (kube-controller-manager) makes the Jobs' pods; the test's
`Kubelet` runs each one's `ringkv` command as a real CLI process against the
cluster's real nodes, with the claim of a PVC destination mapped onto a
directory. So a KVBackup here writes a real backup, a restore drill restores
it into a real throw-away node, and `bootstrap.fromBackup` restores it into a
new cluster of another size. The schedule and retention run in a
`Reconciler` of this process with an injected clock, their prune Jobs again
through the kubelet, on real backup directories.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
from kubeharness.plugin import wait_for

from ringkv import Client
from ringkv_operator.k8s import ApiException, Kube
from ringkv_operator.model import BACKUP_PLURAL, GROUP, PLURAL, VERSION, parse_cluster

from optest import kvcluster, wait_status

pytestmark = [pytest.mark.k8s_api, pytest.mark.slow, pytest.mark.timeout(420)]

NODE_ENV = [
    {"name": "RINGKV_ANTI_ENTROPY_INTERVAL", "value": "2s"},
    {"name": "RINGKV_MAP_SIZE", "value": "256Mi"},
]


def _post(kube: Any, ns: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    return dict(kube.request("POST", f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{plural}", body))


def _claim(kube: Any, ns: str, name: str) -> None:
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )


def _kvbackup(name: str, cluster: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ringkv.io/v1alpha1",
        "kind": "KVBackup",
        "metadata": {"name": name},
        "spec": {"cluster": cluster, **spec},
    }


def _token(kube: Any, ns: str, cluster: str) -> str:
    secret = kube.read("Secret", ns, f"{cluster}-auth")
    return base64.b64decode(secret["data"]["token"]).decode()


def _backup_phase(kube: Any, ns: str, name: str) -> dict[str, Any]:
    body = kube.read("KVBackup", ns, name) or {}
    return dict(body.get("status") or {})


def _events(kube: Any, ns: str, name: str) -> list[str]:
    return [
        e["reason"]
        for e in kube.list("Event", ns)
        if e["involvedObject"]["name"] == name
        and e.get("reportingComponent") == "ringkv.io/operator"
    ]


def test_kvbackup_with_a_drill_then_a_new_cluster_bootstrapped_from_it(
    kube: Any,
    kube_controller_manager: Any,
    kube_namespace: str,
    kubelet: Any,
    operator: Any,
) -> None:
    ns = kube_namespace
    _claim(kube, ns, "bk")
    _post(kube, ns, PLURAL, kvcluster("src", replicas=3, partitions=64, env=NODE_ENV))
    wait_status(kube, ns, "src", lambda s: s.get("phase") == "Ready", timeout=90, what="src Ready")
    token = _token(kube, ns, "src")
    src = [kubelet.url(f"src-{i}") for i in range(3)]
    with Client(src, token=token) as kv:
        kv.put_many({f"k{i:05d}": f"v{i}".encode() * 4 for i in range(3000)})
        kv.put_many({f"k{i:05d}": f"w{i}".encode() for i in range(0, 3000, 3)})  # overwrites
        for i in range(1, 3000, 7):
            kv.delete(f"k{i:05d}")
        kv.put("forever", b"yes")
        kv.put("soon-gone", b"x", ttl=1)
        expected = {k: kv.get(k) for k in kv.iter_keys()}
    expected.pop("soon-gone", None)
    assert len(expected) > 2500 and "k00001" not in expected

    # -- a KVBackup to the claim, with a restore drill --------------------------------
    _post(
        kube,
        ns,
        BACKUP_PLURAL,
        _kvbackup("src-b1", "src", destination={"pvc": {"claimName": "bk"}}, verify="restore"),
    )

    def finished() -> bool:
        return _backup_phase(kube, ns, "src-b1").get("phase") in ("Completed", "Failed")

    wait_for(finished, timeout=120, what="KVBackup src-b1 to finish")
    status = _backup_phase(kube, ns, "src-b1")
    assert status["phase"] == "Completed", (status, kubelet.logs())
    assert status["location"] == "pvc://bk/src-b1"
    assert status["partitions"] == 64 and status["sizeBytes"] > 0
    assert status["keys"] >= len(expected)  # tombstones are records too
    assert status["verified"].startswith("restore drill passed"), status["verified"]
    assert status["startedAt"] <= status["completedAt"]
    assert not (kube.read("KVBackup", ns, "src-b1") or {})["metadata"].get("finalizers")
    job = kube.read("Job", ns, "src-b1")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "KVBackup"
    assert (kubelet.root / "pvc-bk" / "src-b1" / "manifest.json").exists()  # on the claim
    assert "BackupCompleted" in _events(kube, ns, "src-b1")
    cluster = wait_status(
        kube, ns, "src", lambda s: (s.get("lastBackup") or {}).get("name") == "src-b1",
        what="status.lastBackup",
    )  # fmt: skip
    ready = {c["type"]: c for c in cluster["conditions"]}["BackupReady"]
    assert (ready["status"], ready["reason"]) == ("True", "BackupCompleted")

    # -- a KVBackup that cannot work fails with the reason -----------------------------
    _post(
        kube,
        ns,
        BACKUP_PLURAL,
        _kvbackup(
            "src-bad", "src", destination={"s3": {"bucket": "b", "endpoint": "http://127.0.0.1:9"}}
        ),
    )
    wait_for(
        lambda: _backup_phase(kube, ns, "src-bad").get("phase") == "Failed",
        timeout=150,
        what="KVBackup src-bad to fail",
    )
    assert "failed" in _backup_phase(kube, ns, "src-bad")["message"]

    # -- a new cluster of another size from it: Restoring, never Ready before -----------
    _post(
        kube, ns, PLURAL,
        kvcluster("dst", replicas=2, replicationFactor=2, partitions=32, env=NODE_ENV,
                  bootstrap={"fromBackup": {"name": "src-b1"}}),
    )  # fmt: skip
    phases: list[str] = []

    def restored() -> bool:
        status = (kube.cluster(ns, "dst") or {}).get("status") or {}
        phase = status.get("phase")
        if phase and (not phases or phases[-1] != phase):
            phases.append(phase)
        if phase == "Ready":
            assert (status.get("restore") or {}).get("phase") == "Completed", status
            return True
        return False

    wait_for(restored, timeout=150, interval=0.2, what="dst restored and Ready")
    assert "Restoring" in phases, phases
    status = kube.cluster(ns, "dst")["status"]
    assert status["restore"]["source"] == "pvc://bk/src-b1"
    assert {c["type"]: c for c in status["conditions"]}["Ready"]["status"] == "True"
    assert "RestoreCompleted" in _events(kube, ns, "dst")
    dst = [kubelet.url(f"dst-{i}") for i in range(2)]
    with Client(dst, token=_token(kube, ns, "dst")) as kv:
        got = {k: kv.get(k) for k in kv.iter_keys()}
    assert got == expected


def test_schedule_and_tiered_retention_with_an_injected_clock(
    kube: Any,
    kube_controller_manager: Any,
    kube_namespace: str,
    kubelet: Any,
    crds: None,
) -> None:
    from ringkv_operator.reconciler import OperatorConfig, Reconciler

    ns = kube_namespace
    _claim(kube, ns, "bk")
    body = _post(
        kube, ns, PLURAL,
        kvcluster(
            "sch", replicas=1, replicationFactor=1, partitions=8, env=NODE_ENV,
            backup={
                "destination": {"pvc": {"claimName": "bk"}},
                "schedule": "0 2 * * *",
                "retention": {"keepLast": 2, "keepDaily": 3, "keepWeekly": 3},
            },
        ),
    )  # fmt: skip
    created = dt.datetime.fromisoformat(
        body["metadata"]["creationTimestamp"].replace("Z", "+00:00")
    )
    now = [created.timestamp()]
    config = OperatorConfig(
        resolver=f"map:{kubelet.map_path}",
        node_image="ringkv/node:test",
        busy_interval_s=0.2,
        idle_interval_s=1.0,
    )
    rec = Reconciler(kube, config, clock=lambda: now[0])
    data = kubelet.root / "pvc-bk"

    def scheduled() -> list[dict[str, Any]]:
        return [
            b for b in kube.list("KVBackup", ns, {"ringkv.io/scheduled": "true"})
            if b["spec"]["cluster"] == "sch"
        ]  # fmt: skip

    rec.reconcile(ns, "sch")
    assert scheduled() == []  # 02:00 has not come since the cluster was created
    first = (created + dt.timedelta(days=1)).replace(hour=2, minute=0, second=0, microsecond=0)
    if first - created > dt.timedelta(days=1):
        first -= dt.timedelta(days=1)
    days = [first + dt.timedelta(days=i) for i in range(12)]
    for i, day in enumerate(days):
        now[0] = (day + dt.timedelta(seconds=5)).timestamp()
        rec.reconcile(ns, "sch")
        name = f"sch-{day.strftime('%Y%m%d%H%M%S')}"
        live = kube.read("KVBackup", ns, name)
        assert live is not None, (i, [b["metadata"]["name"] for b in scheduled()])
        assert live["spec"]["destination"] == {"pvc": {"claimName": "bk", "path": ""}}
        # Its backup "ran" (before a turn starts its Job): data on the claim, and
        # the status its Job's end would write.
        (data / name).mkdir(parents=True, exist_ok=True)
        (data / name / "manifest.json").write_text("{}")
        kube.patch(
            "KVBackup", ns, name,
            {"status": {"phase": "Completed", "completedAt": day.strftime("%Y-%m-%dT%H:%M:%SZ")}},
            sub="status",
        )  # fmt: skip
        rec.reconcile(ns, "sch")  # a turn run again makes no second backup
        assert max(b["metadata"]["name"] for b in scheduled()) == name
    names = {f"sch-{d.strftime('%Y%m%d%H%M%S')}": d for d in days}
    status = kube.cluster(ns, "sch")["status"]
    assert status["backup"]["lastScheduleTime"] == days[-1].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert status["backup"]["nextScheduleTime"] == (days[-1] + dt.timedelta(days=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )

    # What the policy keeps, worked out here by hand from the calendar:
    newest_first = sorted(names, key=names.__getitem__, reverse=True)
    keep = set(newest_first[:2]) | set(newest_first[:3])  # keepLast 2, keepDaily 3
    weeks: dict[tuple[int, int], str] = {}
    for name in newest_first:
        iso = names[name].isocalendar()
        weeks.setdefault((iso.year, iso.week), name)
    keep |= set(list(weeks.values())[:3])  # keepWeekly 3: the newest of each of 3 weeks
    assert 4 <= len(keep) < len(names)

    seen: dict[str, Any] = {}

    def settled() -> bool:
        rec.reconcile(ns, "sch")
        seen["left"] = {b["metadata"]["name"] for b in scheduled()}
        seen["status"] = ((kube.cluster(ns, "sch") or {}).get("status") or {}).get("backup", {})
        return seen["left"] == keep and not seen["status"].get("pruning")

    try:
        wait_for(settled, timeout=120, interval=0.5, what="retention to prune down to the tiers")
    except BaseException:
        job = kube.read("Job", ns, "sch-prune")
        print("keep", sorted(keep), "seen", seen, "job", job and job.get("status"))
        print(kubelet.logs()[-3000:])
        raise
    on_claim = {p.name for p in data.iterdir() if p.is_dir()}
    assert on_claim == keep  # the data went, not only the objects
    assert kube.read("Job", ns, "sch-prune") is None  # cleaned up after it ran
    assert kubelet.job_runs and all(code == 0 for _, code in kubelet.job_runs)

    # suspend: no new backup however late it is
    kube.patch("KVCluster", ns, "sch", {"spec": {"backup": {"suspend": True}}})
    now[0] = (days[-1] + dt.timedelta(days=3, seconds=5)).timestamp()
    rec.reconcile(ns, "sch")
    assert {b["metadata"]["name"] for b in scheduled()} == keep
    rec.close()


def test_bad_backup_specs_are_refused_naming_the_field(
    kube: Any, kube_namespace: str, crds: None
) -> None:
    ns = kube_namespace
    cases = [
        (_kvbackup("b", "kv", destination={}), "exactly one of pvc or s3"),
        (_kvbackup("b", "kv", destination={"pvc": {}}), "claimName"),
        (
            _kvbackup("b", "kv", destination={"pvc": {"claimName": "x"}}, verify="maybe"),
            "spec.verify",
        ),
        (
            kvcluster(
                "c",
                backup={"destination": {"pvc": {"claimName": "x"}}, "retention": {"keepLast": 0}},
            ),
            "retention must keep something",
        ),
        (
            kvcluster("c", bootstrap={"fromBackup": {"name": "a", "location": "pvc://x/y"}}),
            "exactly one of name or location",
        ),
        (
            kvcluster("c", bootstrap={"fromBackup": {"location": "ftp://x"}}),
            "spec.bootstrap.fromBackup.location",
        ),
    ]
    for body, words in cases:
        plural = BACKUP_PLURAL if body["kind"] == "KVBackup" else PLURAL
        with pytest.raises(ApiException) as err:
            _post(kube, ns, plural, body)
        text = err.value.body.decode() if isinstance(err.value.body, bytes) else err.value.body
        assert err.value.status == 422 and words in text, text
    # bootstrap cannot be added to a cluster that exists
    _post(kube, ns, PLURAL, kvcluster("c"))
    with pytest.raises(ApiException) as err:
        kube.patch("KVCluster", ns, "c", {"spec": {"bootstrap": {"fromBackup": {"name": "a"}}}})
    text = err.value.body.decode() if isinstance(err.value.body, bytes) else err.value.body
    assert "bootstrap is set when the cluster is created" in text, text


class _CountingKube(Kube):
    """The operator's own seam over the real API server, counting each GET's path."""

    def __init__(self, api: Any) -> None:
        super().__init__(api)
        self.gets: list[str] = []

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        if method == "GET":
            self.gets.append(path)
        return super().request(method, path, body, **kwargs)


def test_a_cluster_turn_lists_its_backups_once_and_steps_them_as_listed(
    kube: Any, kube_namespace: str, crds: None
) -> None:
    """One listing of the KVBackups per turn, none read again by name nor their
    KVCluster: the turn steps them from what it listed, and its lastBackup and
    BackupReady come from what the steps returned (no controller manager: the
    Jobs stay as created)."""
    from ringkv_operator.reconciler import OperatorConfig, Reconciler

    ns = kube_namespace
    _post(kube, ns, PLURAL, kvcluster("one", replicas=1, replicationFactor=1, partitions=8))
    kube.create(  # a Job by the name the KVBackup's would take, not the operator's
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "one-taken", "namespace": ns},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "x", "image": "busybox", "command": ["true"]}],
                    }
                }
            },
        }
    )
    pvc = {"pvc": {"claimName": "bk"}}
    _post(kube, ns, BACKUP_PLURAL, _kvbackup("one-taken", "one", destination=pvc))
    _post(kube, ns, BACKUP_PLURAL, _kvbackup("one-new", "one", destination=pvc))
    _post(kube, ns, BACKUP_PLURAL, _kvbackup("other", "another", destination=pvc))
    counting = _CountingKube(kube.api)
    rec = Reconciler(counting, OperatorConfig(node_image="ringkv/node:test"))
    try:
        rec.reconcile(ns, "one")
    finally:
        rec.close()
    backups = f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{BACKUP_PLURAL}"
    clusters = f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}"
    assert counting.gets.count(backups) == 1, counting.gets
    assert not [p for p in counting.gets if p.startswith(backups + "/")], counting.gets
    assert counting.gets.count(f"{clusters}/one") == 1, counting.gets

    taken = _backup_phase(kube, ns, "one-taken")
    assert (taken["phase"], taken["message"]) == ("Failed", "Job one-taken exists and is not ours")
    new = _backup_phase(kube, ns, "one-new")
    assert (new["phase"], new["job"]) == ("Running", "one-new"), new
    job = kube.read("Job", ns, "one-new")
    assert job["metadata"]["ownerReferences"][0]["name"] == "one-new"
    assert _backup_phase(kube, ns, "other") == {}  # another cluster's: not stepped here
    status = kube.cluster(ns, "one")["status"]
    ready = {c["type"]: c for c in status["conditions"]}["BackupReady"]
    assert (ready["status"], ready["reason"]) == ("False", "BackupFailed"), ready  # this turn's
    assert "lastBackup" not in status
    assert "BackupFailed" in _events(kube, ns, "one")
    assert "BackupFailed" in _events(kube, ns, "one-taken")

    # one deleted after a turn listed it: its step writes no status, and does not fail
    late = _post(kube, ns, BACKUP_PLURAL, _kvbackup("one-late", "one", destination=pvc))
    kube.delete("KVBackup", ns, "one-late")
    step = rec.backups.step_backup(late, parse_cluster(kube.cluster(ns, "one")))
    assert step["phase"] == "Running" and kube.read("KVBackup", ns, "one-late") is None
