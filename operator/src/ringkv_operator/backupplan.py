"""Backup decisions, as functions of what was observed and the time.

- `backup_status`: a KVBackup's status from its Job's outcome;
- `due`: whether `spec.backup.schedule` fires now, and for which time;
- `prune`: which scheduled KVBackups retention deletes;
- `backup_summary`: a KVCluster's `lastBackup` and BackupReady condition.

The clock is an argument everywhere, so the tests give any time. Pure: no
kopf, no kubernetes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from croniter import croniter

from ringkv.retention import Backup, Retention, select
from ringkv_operator.jobs import JobOutcome
from ringkv_operator.status import iso, parse_time

__all__ = [
    "SCHEDULED_LABEL",
    "BackupView",
    "backup_status",
    "backup_summary",
    "due",
    "next_run",
    "prune",
    "scheduled_name",
    "view",
]

SCHEDULED_LABEL = "ringkv.io/scheduled"
CLUSTER_LABEL = "app.kubernetes.io/instance"
FINISHED = ("Completed", "Failed")


@dataclass(frozen=True, slots=True)
class BackupView:
    """One KVBackup as the cluster's turn needs it."""

    name: str
    cluster: str
    phase: str
    created: float
    completed: float | None = None
    scheduled: bool = False
    location: str = ""
    message: str = ""
    destination: Mapping[str, Any] = field(default_factory=dict)  # as its spec has it


def view(body: Mapping[str, Any]) -> BackupView:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return BackupView(
        name=str(meta.get("name")),
        cluster=str((body.get("spec") or {}).get("cluster") or ""),
        phase=str(status.get("phase") or "Pending"),
        created=parse_time(meta.get("creationTimestamp")) or 0.0,
        completed=parse_time(status.get("completedAt")),
        scheduled=(meta.get("labels") or {}).get(SCHEDULED_LABEL) == "true",
        location=str(status.get("location") or ""),
        message=str(status.get("message") or ""),
        destination=dict((body.get("spec") or {}).get("destination") or {}),
    )


# -- a KVBackup's status ------------------------------------------------------------


def backup_status(
    previous: Mapping[str, Any],
    result: JobOutcome | None,
    *,
    job: str,
    location: str,
    now: float,
) -> dict[str, Any]:
    """The KVBackup's status: Running while its Job runs, then Completed (with
    the CLI's figures) or Failed (with the Job's last error)."""
    doc: dict[str, Any] = {k: v for k, v in previous.items() if k != "conditions"}
    doc["job"] = job
    doc["location"] = location
    doc.setdefault("startedAt", iso(now))
    if result is None or result.state == "Running":
        doc["phase"] = "Running"
        doc["message"] = f"Job {job} is running `ringkv backup create`"
        if result is not None and result.started_at:
            doc["startedAt"] = result.started_at
        return doc
    if result.started_at:
        doc["startedAt"] = result.started_at
    doc["completedAt"] = result.completed_at or iso(now)
    if result.state == "Failed":
        doc["phase"] = "Failed"
        doc["message"] = f"Job {job} failed: {result.message}"
        return doc
    s = result.summary
    doc["phase"] = "Completed"
    doc["location"] = location
    for key, name in (
        ("sizeBytes", "size_bytes"),
        ("keys", "keys"),
        ("partitions", "partitions"),
        ("ringEpoch", "ring_epoch"),
    ):
        if isinstance(s.get(name), int):
            doc[key] = s[name]
    if s.get("started_at"):
        doc["startedAt"] = s["started_at"]
    if s.get("completed_at"):
        doc["completedAt"] = s["completed_at"]
    keys = doc.get("keys", "?")
    doc["message"] = f"{keys} keys backed up to {location}"
    if "verified" in s:
        doc["verified"] = str(s["verified"])
        if s.get("verified_ok") is False:
            doc["phase"] = "Failed"
            doc["message"] = f"the backup was written to {location}, but {s['verified']}"
    return doc


# -- the schedule -----------------------------------------------------------------------


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def next_run(schedule: str, after: float) -> float:
    """The first time `schedule` fires strictly after `after` (UTC)."""
    return float(croniter(schedule, _utc(after)).get_next(float))


def due(schedule: str, last: float | None, created: float, now: float) -> float | None:
    """The scheduled time to back up now, or None.

    `last` is the schedule time of the last KVBackup created (None: none yet,
    so the schedule counts from `created`, the KVCluster's creation or the
    schedule's first sight). Missed runs do not pile up: after an outage only
    the most recent missed time fires, as a CronJob does.
    """
    start = last if last is not None else created
    first = next_run(schedule, start)
    if first > now:
        return None
    latest = float(croniter(schedule, _utc(now)).get_prev(float))  # the last before now
    return max(first, latest)


def scheduled_name(cluster: str, when: float) -> str:
    """`<cluster>-<YYYYMMDDHHMMSS>`: one name per schedule time, so creating it
    twice (a turn run again after a crash) cannot make two backups."""
    return f"{cluster}-{_utc(when).strftime('%Y%m%d%H%M%S')}"


# -- retention ----------------------------------------------------------------------------


def prune(backups: Sequence[BackupView], policy: Retention) -> list[str]:
    """The scheduled, completed KVBackups `policy` does not keep (newest first).

    Only what the schedule made is pruned: a KVBackup someone created by hand
    is theirs to delete, and a running or failed one is not a backup to count.
    """
    done = [b for b in backups if b.scheduled and b.phase == "Completed"]
    decision = select(
        [Backup(b.name, int((b.completed or b.created) * 1000)) for b in done], policy
    )
    return list(decision.prune)


# -- the cluster's view of its backups -------------------------------------------------


def backup_summary(
    backups: Sequence[BackupView],
) -> tuple[dict[str, Any] | None, tuple[str, str, str] | None]:
    """`status.lastBackup` and the BackupReady condition (None: no backups yet).

    BackupReady is True while the newest finished KVBackup completed, False
    when it failed (the message says which and why)."""
    completed = [b for b in backups if b.phase == "Completed"]
    last = max(completed, key=lambda b: (b.completed or 0.0, b.name), default=None)
    last_doc = None
    if last is not None:
        last_doc = {
            "name": last.name,
            "completedAt": iso(last.completed or last.created),
            "location": last.location,
        }
    finished = [b for b in backups if b.phase in FINISHED]
    if not finished:
        running = [b for b in backups if b.phase not in FINISHED]
        if running:
            return last_doc, ("Unknown", "BackupRunning", f"KVBackup {running[-1].name} runs")
        return last_doc, None
    newest = max(finished, key=lambda b: (b.completed or b.created, b.name))
    if newest.phase == "Completed":
        return last_doc, ("True", "BackupCompleted", f"KVBackup {newest.name} completed")
    return last_doc, (
        "False",
        "BackupFailed",
        f"KVBackup {newest.name} failed: {newest.message}",
    )
