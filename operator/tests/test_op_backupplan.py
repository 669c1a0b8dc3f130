"""The backup decisions and builders: destinations, Jobs, outcomes, schedule, retention."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from ringkv.retention import Retention
from ringkv_operator.backupplan import (
    BackupView,
    backup_status,
    backup_summary,
    due,
    next_run,
    prune,
    scheduled_name,
    view,
)
from ringkv_operator.backupspec import (
    S3,
    Destination,
    job_name,
    parse_backup,
    parse_backup_policy,
    parse_bootstrap,
    parse_destination,
    parse_location,
)
from ringkv_operator.jobs import JobOutcome, backup_job, outcome, prune_job, restore_job
from ringkv_operator.model import SpecError, parse_cluster


def t(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


CLUSTER = parse_cluster(
    {"metadata": {"name": "kv", "namespace": "ns", "uid": "u-1"}, "spec": {"image": "img:1"}}
)
S3_DEST = {
    "s3": {
        "bucket": "b",
        "prefix": "/nightly/",
        "endpoint": "http://s3:5000",
        "pathStyle": True,
        "secretName": "creds",
    }
}


# -- destinations and locations -------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "cli", "location"),
    [
        ({"pvc": {"claimName": "bk"}}, "/backup", "pvc://bk/ID"),
        ({"pvc": {"claimName": "bk", "path": "/kv/"}}, "/backup/kv", "pvc://bk/kv/ID"),
        (S3_DEST, "s3://b/nightly", "s3://b/nightly/ID"),
        ({"s3": {"bucket": "b"}}, "s3://b", "s3://b/ID"),
    ],
)
def test_destination_locations(doc: dict[str, Any], cli: str, location: str) -> None:
    dest = parse_destination(doc, "spec.destination")
    assert dest.cli_location() == cli
    assert dest.location("ID") == location


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        (None, "spec.destination: must be an object"),
        ({}, "exactly one of pvc or s3"),
        ({"pvc": {"claimName": "a"}, "s3": {"bucket": "b"}}, "exactly one of pvc or s3"),
        ({"pvc": {}}, "spec.destination.pvc.claimName"),
        ({"s3": {"prefix": "x"}}, "spec.destination.s3.bucket"),
    ],
)
def test_bad_destinations_name_the_field(doc: Any, words: str) -> None:
    with pytest.raises(SpecError, match=words.replace(".", r"\.")):
        parse_destination(doc, "spec.destination")


@pytest.mark.parametrize(
    ("location", "want", "backup_id"),
    [
        ("pvc://bk/ID", Destination(claim="bk"), "ID"),
        ("pvc://bk/sub/dir/ID", Destination(claim="bk", path="sub/dir"), "ID"),
        ("pvc://bk", Destination(claim="bk"), None),
        ("s3://b/nightly/ID", Destination(s3=S3("b", "nightly", region="eu-1")), "ID"),
        ("s3://b/ID", Destination(s3=S3("b", "", region="eu-1")), "ID"),
    ],
)
def test_locations_parse_back(location: str, want: Destination, backup_id: str | None) -> None:
    dest, got_id = parse_location(location, {"region": "eu-1"}, "f")
    assert (dest, got_id) == (want, backup_id)
    if backup_id is not None:  # what status.location says is what bootstrap takes
        assert dest.location(backup_id) == location


def test_bootstrap_takes_a_name_or_a_location() -> None:
    assert parse_bootstrap(None) is None
    assert parse_bootstrap({"fromBackup": {"name": "nightly"}}).backup == "nightly"  # type: ignore[union-attr]
    boot = parse_bootstrap({"fromBackup": {"location": "pvc://bk/ID"}})
    assert boot is not None and boot.destination == Destination(claim="bk")
    assert boot.backup_id == "ID"
    bads: list[dict[str, Any]] = [
        {"fromBackup": {}},
        {"fromBackup": {"name": "a", "location": "pvc://b/c"}},
    ]
    for bad in bads:
        with pytest.raises(SpecError, match="exactly one of name or location"):
            parse_bootstrap(bad)
    with pytest.raises(SpecError, match="location"):
        parse_bootstrap({"fromBackup": {"location": "ftp://x/y"}})


def test_backup_policy() -> None:
    policy = parse_backup_policy(
        {
            "destination": {"pvc": {"claimName": "bk"}},
            "schedule": "0 2 * * *",
            "retention": {"keepLast": 2, "keepDaily": 7},
        }
    )
    assert policy is not None and policy.retention == Retention(2, 7, 0, 0)
    with pytest.raises(SpecError, match=r"spec\.backup\.schedule"):
        parse_backup_policy({"destination": {"pvc": {"claimName": "bk"}}, "schedule": "nope"})
    with pytest.raises(SpecError, match="must keep something"):
        parse_backup_policy({"destination": {"pvc": {"claimName": "bk"}}, "retention": {}})


def test_kvbackup_spec() -> None:
    spec = parse_backup({"spec": {"cluster": "kv", "destination": S3_DEST, "verify": "restore"}})
    assert spec.cluster == "kv" and spec.verify == "restore"
    with pytest.raises(SpecError, match=r"spec\.cluster"):
        parse_backup({"spec": {"destination": S3_DEST}})


def test_job_names_stay_labels() -> None:
    assert job_name("kv", "restore") == "kv-restore"
    long = job_name("a" * 52 + "-20261203020000")
    assert len(long) <= 63 and long != job_name("a" * 52 + "-20261204020000")


# -- the Jobs ---------------------------------------------------------------------------


def _container(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["template"]["spec"]["containers"][0])


def test_backup_job_to_s3() -> None:
    dest = parse_destination(S3_DEST, "d")
    job = backup_job(
        CLUSTER, backup="kv-1", backup_uid="b-1", destination=dest, verify="restore", image="img:1"
    )
    c = _container(job)
    assert c["command"] == ["ringkv"]
    assert c["args"] == [
        "backup", "create", "--to", "s3://b/nightly", "--id", "kv-1", "--cluster", "kv",
        "--verify", "restore", "--summary-file", "/dev/termination-log",
    ]  # fmt: skip
    env = {e["name"]: e for e in c["env"]}
    assert env["RINGKV_URL"]["value"] == "http://kv.ns.svc:8080"
    assert env["RINGKV_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "kv-auth", "key": "token"}
    assert env["RINGKV_S3_ENDPOINT"]["value"] == "http://s3:5000"
    assert env["RINGKV_S3_PATH_STYLE"]["value"] == "true"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "creds"
    assert not any("token" in a.lower() for a in c["args"])  # never argv
    pod = job["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]  # no claim for S3
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["ringkv.io/client"] == "true"  # the NetworkPolicy lets it in
    assert labels["app.kubernetes.io/component"] == "backup"  # not a storage pod
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("KVBackup", "kv-1", "b-1")


def test_backup_job_to_a_claim_mounts_it() -> None:
    dest = parse_destination({"pvc": {"claimName": "bk", "path": "kv"}}, "d")
    job = backup_job(
        CLUSTER, backup="b", backup_uid="u", destination=dest, verify="none", image="i"
    )
    c = _container(job)
    assert "--verify" not in c["args"] and c["args"][3] == "/backup/kv"
    assert {"name": "backup", "mountPath": "/backup"} in c["volumeMounts"]
    claims = [v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "backup"]
    assert claims == [{"name": "backup", "persistentVolumeClaim": {"claimName": "bk"}}]
    assert not any(e["name"].startswith("AWS_") for e in c["env"])


def test_restore_and_prune_jobs() -> None:
    dest = Destination(claim="bk")
    r = restore_job(CLUSTER, destination=dest, backup_id="ID", image="i")
    assert r["metadata"]["name"] == "kv-restore"
    assert _container(r)["args"][:5] == ["restore", "--from", "/backup", "--id", "ID"]
    assert r["metadata"]["ownerReferences"][0]["kind"] == "KVCluster"
    p = prune_job(CLUSTER, destination=dest, backups=["b2", "b1"], image="i")
    assert _container(p)["args"][:6] == [
        "backup",
        "delete",
        "--from",
        "/backup",
        "--missing-ok",
        "b1",
    ]
    assert json.loads(p["metadata"]["annotations"]["ringkv.io/prune"]) == ["b1", "b2"]


# -- reading a Job back -------------------------------------------------------------------


def _pod(phase: str, message: str, finished: str = "2026-12-03T10:05:00Z") -> dict[str, Any]:
    return {
        "status": {
            "phase": phase,
            "containerStatuses": [
                {"state": {"terminated": {"message": message, "finishedAt": finished}}}
            ],
        }
    }


def _job(*conds: str) -> dict[str, Any]:
    return {
        "status": {
            "startTime": "2026-12-03T10:00:00Z",
            "completionTime": "2026-12-03T10:05:00Z" if "Complete" in conds else None,
            "conditions": [
                {
                    "type": c,
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "3 tries",
                }
                for c in conds
            ],
        }
    }


def test_outcomes() -> None:
    assert outcome(_job(), []).state == "Running"
    summary = {"keys": 10, "size_bytes": 99}
    done = outcome(
        _job("Complete"), [_pod("Failed", "boom"), _pod("Succeeded", json.dumps(summary))]
    )
    assert (done.state, dict(done.summary)) == ("Succeeded", summary)
    assert done.completed_at == "2026-12-03T10:05:00Z"
    failed = outcome(_job("Failed"), [_pod("Failed", "Traceback...\nringkv: cluster error: down")])
    assert failed.state == "Failed"
    assert "BackoffLimitExceeded" in failed.message and "cluster error: down" in failed.message
    gone = outcome(_job("Complete"), [])  # the pods were cleaned away: no figures
    assert gone.state == "Succeeded" and not gone.summary


def test_backup_status() -> None:
    now = t("2026-12-03T10:01:00")
    running = backup_status({}, None, job="j", location="pvc://bk/b", now=now)
    assert running["phase"] == "Running" and running["startedAt"] == "2026-12-03T10:01:00Z"
    summary = {"keys": 5, "size_bytes": 7, "partitions": 64, "ring_epoch": 3,
               "completed_at": "2026-12-03T10:04:00Z"}  # fmt: skip
    done = backup_status(
        running, JobOutcome("Succeeded", summary=summary), job="j", location="pvc://bk/b", now=now
    )
    assert (done["phase"], done["keys"], done["sizeBytes"], done["partitions"]) == (
        "Completed", 5, 7, 64,
    )  # fmt: skip
    assert done["completedAt"] == "2026-12-03T10:04:00Z" and "verified" not in done
    drilled = backup_status(
        running,
        JobOutcome(
            "Succeeded", summary={**summary, "verified": "drill failed: x", "verified_ok": False}
        ),
        job="j",
        location="l",
        now=now,
    )
    assert drilled["phase"] == "Failed" and drilled["verified"] == "drill failed: x"
    failed = backup_status(
        running, JobOutcome("Failed", message="m"), job="j", location="l", now=now
    )
    assert failed["phase"] == "Failed" and "m" in failed["message"]


# -- the schedule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last", "created", "now", "want"),
    [
        (None, "2026-12-03T10:10", "2026-12-03T10:59", None),  # not yet
        (None, "2026-12-03T10:10", "2026-12-03T11:00:05", "2026-12-03T11:00"),
        ("2026-12-03T11:00", "2026-12-01T00:00", "2026-12-03T11:30", None),  # done already
        ("2026-12-03T11:00", "2026-12-01T00:00", "2026-12-03T12:00:01", "2026-12-03T12:00"),
        # an operator down for hours fires once, for the latest missed time
        ("2026-12-03T11:00", "2026-12-01T00:00", "2026-12-03T15:30", "2026-12-03T15:00"),
    ],
)
def test_due(last: str | None, created: str, now: str, want: str | None) -> None:
    got = due("0 * * * *", t(last) if last else None, t(created), t(now))
    assert got == (t(want) if want else None)


def test_next_run_and_names() -> None:
    assert next_run("0 2 * * *", t("2026-12-03T02:00")) == t("2026-12-04T02:00")
    assert scheduled_name("kv", t("2026-12-03T02:00")) == "kv-20261203020000"


# -- retention --------------------------------------------------------------------------------


def _b(name: str, when: str, phase: str = "Completed", scheduled: bool = True) -> BackupView:
    return BackupView(name, "kv", phase, t(when), t(when), scheduled)


def test_prune_keeps_tiers_and_what_it_did_not_make() -> None:
    days = [_b(f"d{i}", f"2026-11-{i:02d}T02:00") for i in range(1, 31)]
    extra = [
        _b("manual", "2026-10-01T00:00", scheduled=False),  # by hand: never pruned
        _b("failed", "2026-10-02T00:00", phase="Failed"),
        _b("running", "2026-10-03T00:00", phase="Running"),
        _b("old-month", "2026-09-15T02:00"),
    ]
    doomed = prune(days + extra, Retention(keep_last=2, keep_daily=3, keep_monthly=2))
    kept = {b.name for b in days + extra} - set(doomed)
    # last 2 (d30, d29), daily 3 (d30, d29, d28), monthly 2 (Nov: d30, Sep: old-month)
    assert kept == {"d30", "d29", "d28", "old-month", "manual", "failed", "running"}
    assert doomed[0] == "d27"  # newest first
    assert prune(days[:2], Retention(keep_last=5)) == []


def test_weekly_tier() -> None:
    weeks = [_b(f"w{i}", f"2026-11-{d:02d}T02:00") for i, d in enumerate((2, 3, 9, 10, 16))]
    doomed = prune(weeks, Retention(keep_weekly=2))  # ISO weeks 45, 46, 47
    assert set(doomed) == {"w0", "w1", "w2"}  # w4 (week 47) and w3 (newest of week 46) stay


def test_backup_summary() -> None:
    assert backup_summary([]) == (None, None)
    last, ready = backup_summary([_b("a", "2026-12-01T00:00", phase="Running")])
    assert last is None and ready is not None and ready[0] == "Unknown"
    ok = [_b("a", "2026-12-01T00:00"), _b("b", "2026-12-02T00:00")]
    last, ready = backup_summary(ok)
    assert last == {"name": "b", "completedAt": "2026-12-02T00:00:00Z", "location": ""}
    assert ready == ("True", "BackupCompleted", "KVBackup b completed")
    last, ready = backup_summary([*ok, _b("c", "2026-12-03T00:00", phase="Failed")])
    assert last is not None and last["name"] == "b"  # the last completed one
    assert ready is not None and ready[:2] == ("False", "BackupFailed")


def test_view_of_a_kvbackup() -> None:
    body = {
        "metadata": {
            "name": "kv-1",
            "creationTimestamp": "2026-12-03T02:00:00Z",
            "labels": {"ringkv.io/scheduled": "true"},
        },
        "spec": {"cluster": "kv", "destination": {"pvc": {"claimName": "bk"}}},
        "status": {"phase": "Completed", "completedAt": "2026-12-03T02:01:00Z"},
    }
    v = view(body)
    assert (v.name, v.cluster, v.phase, v.scheduled) == ("kv-1", "kv", "Completed", True)
    assert v.completed == t("2026-12-03T02:01") and v.destination == {"pvc": {"claimName": "bk"}}
