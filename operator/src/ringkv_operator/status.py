"""A KVCluster's `status`, conditions and events, from one turn's observation and decision.

Conditions follow Kubernetes' convention: `lastTransitionTime` changes only
when a condition's status does, and every transition (and every change of
phase) is also reported as an Event. Everything here is computed from the
previous status, the `Observed` snapshot and the `Decision`; the reconciler
only writes what `status_doc` returns and posts what `events` returns.
Pure: no kopf, no kubernetes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ringkv_operator.plan import Decision, Observed, committed

__all__ = [
    "Event",
    "conditions",
    "events",
    "iso",
    "parse_time",
    "status_doc",
    "status_patch",
]


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


_STEP_STATE = {
    "join": "Joining",
    "stream": "Streaming",
    "commit": "Committing",
    "wait": "Streaming",
}


def _wanted(decision: Decision, paused: bool) -> dict[str, tuple[str, str, str]]:
    """type -> (status, reason, message) for this turn."""
    if paused:
        return {
            "Ready": ("Unknown", "Paused", "spec.paused is true: not reconciled"),
            "Progressing": ("False", "Paused", "spec.paused is true: not reconciled"),
        }
    phase, message = decision.phase, decision.message
    out = {
        "Ready": ("True", "ClusterReady", message)
        if phase == "Ready"
        else ("False", phase, message),
        "Progressing": ("True", phase, message)
        if phase in ("Pending", "Scaling", "Rebalancing", "Upgrading")
        else ("False", "Idle", "nothing to do"),
    }
    if phase == "Failed":
        out["Degraded"] = ("True", "Failed", message)
    elif decision.stalled:
        reason = "UpgradeStalled" if phase == "Upgrading" else "ScaleStalled"
        out["Degraded"] = ("True", reason, message)
    elif decision.degraded:
        out["Degraded"] = ("True", "PodsNotReady", "; ".join(decision.degraded))
    else:
        out["Degraded"] = ("False", "AllPodsReady", "every member is ready")
    if decision.action in ("rebalance", "abort") or decision.draining:
        if decision.action == "abort":
            reason = "Aborting"
        elif decision.draining:
            reason = "Draining"
        else:
            reason = _STEP_STATE.get(decision.step.action if decision.step else "", "Joining")
        out["Rebalancing"] = ("True", reason, message)
    else:
        out["Rebalancing"] = ("False", "Idle", "no membership change in progress")
    return out


def conditions(
    previous: Sequence[Mapping[str, Any]],
    wanted: Mapping[str, tuple[str, str, str]],
    now: float,
    generation: int,
) -> list[dict[str, Any]]:
    """The new condition list: `wanted` set, others kept, transition times kept
    unless the status changed."""
    old = {c.get("type"): c for c in previous}
    out = []
    for ctype, (cstatus, reason, message) in wanted.items():
        before = old.pop(ctype, None)
        same = before is not None and before.get("status") == cstatus
        out.append(
            {
                "type": ctype,
                "status": cstatus,
                "reason": reason,
                "message": message,
                "lastTransitionTime": before.get("lastTransitionTime", iso(now))
                if same and before is not None
                else iso(now),
                "observedGeneration": generation,
            }
        )
    out.extend(dict(c) for c in old.values())
    return sorted(out, key=lambda c: str(c.get("type")))


def _rebalance(
    obs: Observed, decision: Decision, previous: Mapping[str, Any]
) -> dict[str, Any] | None:
    before = dict(previous.get("rebalance") or {})
    ring = committed(obs.rings)
    if decision.target is not None and decision.old is not None and decision.action == "rebalance":
        moved = sum(r.partitions_streamed for r in obs.nodes.values() if r.reachable)
        total = sum(r.partitions_to_stream for r in obs.nodes.values() if r.reachable)
        same = before.get("toEpoch") == decision.target.epoch
        step = decision.step.action if decision.step else "join"
        return {
            "state": _STEP_STATE.get(step, "Joining"),
            "fromEpoch": decision.old.epoch,
            "toEpoch": decision.target.epoch,
            "fromMembers": len(decision.old.member_ids),
            "toMembers": len(decision.target.member_ids),
            "partitionsMoved": max(moved, int(before.get("partitionsMoved", 0)) if same else 0),
            "partitionsTotal": max(total, int(before.get("partitionsTotal", 0)) if same else 0),
            "startedAt": before.get("startedAt", iso(obs.now)) if same else iso(obs.now),
        }
    if before and ring is not None and before.get("toEpoch") == ring.epoch:
        done = dict(before)
        done.setdefault("completedAt", iso(obs.now))
        done["state"] = "Draining" if decision.draining else "Done"
        if done["partitionsTotal"]:
            done["partitionsMoved"] = done["partitionsTotal"]
        return done
    return before or None


def _convergence(obs: Observed) -> dict[str, Any]:
    ring = committed(obs.rings)
    members = set(ring.member_ids) if ring is not None else set()
    reports = [r for p, r in obs.nodes.items() if r.reachable and p in members]
    last = [r.last_anti_entropy_ms for r in reports if r.last_anti_entropy_ms is not None]
    doc: dict[str, Any] = {
        "hintBacklog": sum(r.hint_backlog for r in reports),
        "partitionsOutOfSync": sum(r.partitions_out_of_sync for r in reports),
    }
    if last and len(last) == len(reports):
        doc["lastAntiEntropy"] = iso(min(last) / 1000)
    return doc


def _nodes(obs: Observed) -> list[dict[str, Any]]:
    """One line per pod, for `kubectl ringkv status` and people."""
    out = []
    for ordinal in sorted(obs.pods):
        pod = obs.cluster.pod(ordinal)
        report = obs.nodes.get(pod)
        row: dict[str, Any] = {"pod": pod, "ready": obs.pods[ordinal].ready}
        if report is not None and report.reachable:
            row.update(
                epoch=report.epoch,
                partitions=report.partitions_owned,
                hintBacklog=report.hint_backlog,
                partitionsOutOfSync=report.partitions_out_of_sync,
                usedBytes=report.used_bytes,
            )
        else:
            row["unreachable"] = True
        if obs.pods[ordinal].zone:
            row["zone"] = obs.pods[ordinal].zone
        out.append(row)
    return out


def status_doc(
    obs: Observed, decision: Decision, previous: Mapping[str, Any], paused: bool = False
) -> dict[str, Any]:
    """The new `status`, but for its backup part (`lastBackup`, `backup`, `restore`,
    BackupReady), which `Backups.cluster_turn` adds to it."""
    cluster = obs.cluster
    ring = committed(obs.rings)
    phase = "Paused" if paused else decision.phase
    phase_since = previous.get("phaseSince") if previous.get("phase") == phase else None
    doc: dict[str, Any] = {
        "phase": phase,
        "phaseSince": phase_since or iso(obs.now),
        "message": "spec.paused is true: not reconciled" if paused else decision.message,
        "replicas": len(obs.pods),
        "readyReplicas": sum(1 for p in obs.pods.values() if p.ready),
        "selector": ",".join(f"{k}={v}" for k, v in cluster.selector.items()),
        "image": obs.image,
        "observedGeneration": cluster.generation,
        "conditions": conditions(
            previous.get("conditions") or [], _wanted(decision, paused), obs.now, cluster.generation
        ),
    }
    doc["nodes"] = _nodes(obs)
    if ring is not None:
        doc["ringEpoch"] = ring.epoch
        doc["members"] = len(ring.member_ids)
        doc["convergence"] = _convergence(obs)
    elif previous.get("ringEpoch") is not None:
        doc["ringEpoch"] = previous["ringEpoch"]
    rebalance = _rebalance(obs, decision, previous)
    if rebalance:
        doc["rebalance"] = rebalance
    if obs.sts is not None:
        doc["upgrade"] = {
            "revision": obs.sts.update_revision,
            "updated": sum(1 for p in obs.pods.values() if p.revision == obs.sts.update_revision),
            "partition": decision.sts_partition,
        }
    return doc


def events(previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[Event]:
    """An Event for a change of phase and for every condition transition."""
    out = []
    if previous.get("phase") != current.get("phase"):
        phase = str(current.get("phase"))
        kind = "Warning" if phase in ("Degraded", "Failed") else "Normal"
        out.append(Event(kind, phase, str(current.get("message", ""))))
    old = {c.get("type"): c for c in previous.get("conditions") or []}
    for cond in current.get("conditions") or []:
        before = old.get(cond["type"])
        if before is not None and before.get("status") == cond["status"]:
            continue
        if before is None and cond["status"] == "False":
            continue  # a condition that starts out false is no news
        bad = cond["type"] == "Degraded" and cond["status"] == "True"
        text = f"{cond['type']}={cond['status']}: {cond.get('message', '')}"
        out.append(Event("Warning" if bad else "Normal", str(cond.get("reason")), text))
    return out


def failed_status(
    previous: Mapping[str, Any], message: str, now: float, generation: int, phase: str = "Failed"
) -> dict[str, Any]:
    """The status of a KVCluster the operator cannot act on: a bad spec or a name
    taken (Failed), or a Secret it waits for (Pending)."""
    doc = {k: v for k, v in previous.items() if k not in ("conditions", "phase", "message")}
    doc["phase"] = phase
    if previous.get("phase") != phase or not doc.get("phaseSince"):
        doc["phaseSince"] = iso(now)
    doc["message"] = message
    reason = "Failed" if phase == "Failed" else "Blocked"
    doc["conditions"] = conditions(
        previous.get("conditions") or [],
        {
            "Ready": ("False", reason, message),
            "Progressing": ("False", reason, message),
            "Degraded": ("True", reason, message),
        },
        now,
        generation,
    )
    doc["observedGeneration"] = generation
    return doc


def status_patch(previous: Mapping[str, Any], doc: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns `previous` into `doc`: what `doc` has, and
    null for every key, at any depth of nested objects, that it no longer has
    (a merge patch keeps what it does not mention)."""
    patch: dict[str, Any] = {k: None for k in previous if k not in doc}
    for key, value in doc.items():
        before = previous.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            patch[key] = status_patch(before, value)
        else:
            patch[key] = value
    return patch
