"""What to do next for a KVCluster, from what the cluster looks like now.

`decide` is the operator's one decision, a pure function of an `Observed`
snapshot (the KVCluster, its StatefulSet and pods, what every node says
about its ring and progress, the clock) in the manner of
`ringkv.rebalance.next_step`: no state is kept between calls, so a
restarted operator, or one that saw an event twice, decides the same.
The reconciler carries out one `Decision` per turn and looks again.

The order of concerns, each only when those before it are settled:

1. A joining ring that no longer matches the desired members, or that a
   node holds in a different form, is aborted (safe before any node has
   committed it: the old owners still hold every acknowledged write). A
   change of `replicas` during a scale is thus re-planned, never run as a
   second rebalance beside the first.
2. A joining ring that matches is driven one step (`next_step`: join,
   stream, commit).
3. A rolling update in flight goes on, one pod at a time.
4. A ring whose members differ from the desired pods gets a new target,
   once every pod it needs is Ready and reachable (new pods own nothing yet).
5. A pod template that changed starts a rolling update, when every node is
   converged (no hints waiting, no partition out of sync).

The StatefulSet's size follows: never below the members of any ring in
play, and removed pods are kept until their node has dropped the data it
no longer owns, so a retained claim never brings old data back.
Pure: no kopf, no kubernetes (ring math from `ringkv`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ringkv.rebalance import NodeView, Step, UnchangedError, next_step, participants, plan
from ringkv.ring import Member, Ring
from ringkv_operator.model import Cluster

__all__ = [
    "DRAIN_TIMEOUT_S",
    "STALL_AFTER_S",
    "Decision",
    "NodeReport",
    "Observed",
    "PodView",
    "StsView",
    "decide",
]

# A removed pod whose node still holds data is kept this long after the commit
# (the node drops moved partitions after its --drop-delay, 60 s by default).
DRAIN_TIMEOUT_S = 300.0
# A scale or roll waiting this long for a pod is reported as stalled.
STALL_AFTER_S = 300.0


@dataclass(frozen=True, slots=True)
class PodView:
    ordinal: int
    ready: bool
    revision: str = ""  # controller-revision-hash
    terminating: bool = False
    zone: str = ""


@dataclass(frozen=True, slots=True)
class StsView:
    replicas: int
    partition: int
    update_revision: str
    current_revision: str
    ready_replicas: int = 0


@dataclass(frozen=True, slots=True)
class NodeReport:
    """One node's /v1/status and /admin/v1/rebalance, or that it did not answer."""

    pod: str
    reachable: bool
    ready: bool = False
    url: str = ""  # its advertise URL: how peers reach it
    epoch: int = 0
    pending_epoch: int | None = None
    pending_ring: Ring | None = None
    streaming: bool = False
    in_sync: bool = False
    partitions_owned: int = 0
    partitions_to_stream: int = 0
    partitions_streamed: int = 0
    entries: int = 0
    hint_backlog: int = 0
    partitions_out_of_sync: int = 0
    last_anti_entropy_ms: int | None = None
    used_bytes: int = 0

    @classmethod
    def from_docs(
        cls, pod: str, status: Mapping[str, Any], progress: Mapping[str, Any]
    ) -> NodeReport:
        ae = status.get("anti_entropy") or {}
        storage = status.get("storage") or {}
        pending = progress.get("pending_ring")
        last_ae = ae.get("last_round_at_ms", ae.get("last_round_ms"))
        return cls(
            pod=pod,
            reachable=True,
            ready=bool(status.get("ready")),
            url=str(status.get("advertise_url") or ""),
            epoch=int(progress.get("epoch", status.get("epoch", 0))),
            pending_epoch=progress.get("pending_epoch"),
            pending_ring=Ring.from_dict(pending) if pending else None,
            streaming=bool(progress.get("streaming")),
            in_sync=bool(progress.get("in_sync")),
            partitions_owned=int(status.get("partitions_owned", 0)),
            partitions_to_stream=int(progress.get("partitions_to_stream", 0)),
            partitions_streamed=int(progress.get("partitions_streamed", 0)),
            entries=int(storage.get("entries", 0)),
            hint_backlog=sum(
                int(v) for v in (status.get("hints") or {}).get("backlog", {}).values()
            ),
            partitions_out_of_sync=int(
                ae.get("partitions_out_of_sync", ae.get("buckets_out_of_sync", 0))
            ),
            last_anti_entropy_ms=None if last_ae is None else int(last_ae),
            used_bytes=int(storage.get("used_bytes", 0)),
        )

    def view(self) -> NodeView:
        return NodeView(
            self.pod, self.reachable, self.epoch, self.pending_epoch, self.streaming, self.in_sync
        )


@dataclass(frozen=True, slots=True)
class Observed:
    cluster: Cluster
    image: str  # the node image the pods should run
    sts: StsView | None
    pods: Mapping[int, PodView]
    nodes: Mapping[str, NodeReport]  # by pod name
    rings: Mapping[int, Ring]  # committed rings seen on nodes, by epoch
    now: float  # seconds, wall clock
    committed_at: float | None = None  # status.rebalance.completedAt of the last commit
    phase: str = ""  # status.phase as last written, and since when (status.phaseSince)
    phase_since: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """One turn's outcome: the StatefulSet's shape, and at most one node action."""

    sts_replicas: int
    sts_partition: int
    action: str  # none, wait, abort, rebalance
    phase: str  # Pending, Ready, Scaling, Rebalancing, Upgrading, Degraded
    message: str
    old: Ring | None = None  # rebalance: from, to
    target: Ring | None = None
    nodes: tuple[str, ...] = ()  # abort: the nodes to tell
    abort_epochs: Mapping[str, int] = field(default_factory=dict)
    step: Step | None = None
    degraded: tuple[str, ...] = ()  # reasons the cluster is not whole
    stalled: bool = False
    draining: tuple[str, ...] = ()


def committed(rings: Mapping[int, Ring]) -> Ring | None:
    return rings[max(rings)] if rings else None


def desired_ids(cluster: Cluster) -> list[str]:
    return [cluster.pod(i) for i in range(cluster.spec.replicas)]


def _members(obs: Observed, ring: Ring, ids: list[str]) -> list[Member] | None:
    """Members for `ids`: URL from the ring, else the node's own; zone from its pod."""
    out = []
    for pod in ids:
        ordinal = obs.cluster.ordinal(pod)
        view = obs.pods.get(ordinal) if ordinal is not None else None
        zone = view.zone if view is not None else ""
        if pod in ring.member_ids:
            url = ring.member(pod).url
        else:
            report = obs.nodes.get(pod)
            if report is None or not report.reachable or not report.url:
                return None
            url = report.url
        out.append(Member(pod, url, zone))
    return out


def _same_members(ring: Ring, members: list[Member]) -> bool:
    """`ring` already is what `members` asks for (a zone change that moves nothing is)."""
    if set(ring.member_ids) != {m.id for m in members}:
        return False
    if all(ring.member(m.id).zone == m.zone for m in members):
        return True
    try:
        plan(ring, members)
    except UnchangedError:
        return True  # the zones changed, the owners would not
    return False


def _max_ordinal(obs: Observed, ids: Any) -> int:
    ordinals = [o for o in (obs.cluster.ordinal(i) for i in ids) if o is not None]
    return max(ordinals) + 1 if ordinals else 0


def _draining(obs: Observed, ring: Ring | None) -> tuple[str, ...]:
    """Pods past `replicas`, out of the ring, whose node still holds data or hints."""
    if ring is None:
        return ()
    if obs.committed_at is not None and obs.now - obs.committed_at > DRAIN_TIMEOUT_S:
        return ()
    out = []
    for ordinal in sorted(obs.pods):
        pod = obs.cluster.pod(ordinal)
        if ordinal < obs.cluster.spec.replicas or pod in ring.member_ids:
            continue
        report = obs.nodes.get(pod)
        if report is not None and report.reachable and (report.entries or report.hint_backlog):
            out.append(pod)
    return tuple(out)


def _not_ready(obs: Observed, ids: list[str]) -> list[str]:
    out = []
    for pod in ids:
        ordinal = obs.cluster.ordinal(pod)
        view = obs.pods.get(ordinal) if ordinal is not None else None
        report = obs.nodes.get(pod)
        if view is None or not view.ready or report is None or not report.reachable:
            out.append(pod)
    return out


def _outdated(obs: Observed, replicas: int) -> list[int]:
    if obs.sts is None or not obs.sts.update_revision:
        return []
    return sorted(
        o for o, p in obs.pods.items() if o < replicas and p.revision != obs.sts.update_revision
    )


def _unconverged(obs: Observed, ids: list[str]) -> list[str]:
    out = []
    for pod in ids:
        report = obs.nodes.get(pod)
        if report is None or not report.reachable:
            out.append(f"{pod} does not answer")
        elif report.hint_backlog:
            out.append(f"{pod} has {report.hint_backlog} hints to deliver")
        elif report.partitions_out_of_sync:
            out.append(f"{pod} saw {report.partitions_out_of_sync} partitions out of sync")
    return out


_DOWN = NodeReport("", False)


def _stalled(obs: Observed, phase: str) -> bool:
    """The cluster has been in `phase` (waiting for a pod) for too long."""
    return (
        obs.phase == phase
        and obs.phase_since is not None
        and obs.now - obs.phase_since > STALL_AFTER_S
    )


def _in_flight(
    obs: Observed, ring: Ring, reachable: Mapping[str, NodeReport]
) -> tuple[Ring | None, dict[str, int]]:
    """The membership change in progress, and the joining rings to abort.

    A commit in progress (some node holds the newest ring, others still hold it
    as joining) is always finished. A joining ring of the next epoch goes on if
    its members are the desired pods; else, or when nodes hold different rings
    for one epoch, or a ring older than the newest, it is aborted.
    """
    want = set(desired_ids(obs.cluster))
    stale: dict[str, int] = {}
    joining: dict[str, Ring] = {}
    committing = False
    for pod, report in sorted(reachable.items()):
        pending = report.pending_ring
        if pending is None:
            continue
        if pending.epoch == ring.epoch and pending == ring:
            committing = True
        elif pending.epoch <= ring.epoch:
            stale[pod] = pending.epoch
        else:
            joining[pod] = pending
    if committing:
        return ring, stale | {p: r.epoch for p, r in joining.items()}
    if not joining:
        return None, stale
    rings = list(dict.fromkeys(joining.values()))  # distinct, in pod order
    keep = next((r for r in rings if set(r.member_ids) == want), None)
    stale |= {p: r.epoch for p, r in joining.items() if r != keep}
    return keep, stale


def decide(obs: Observed) -> Decision:
    cluster = obs.cluster
    want = cluster.spec.replicas
    ring = committed(obs.rings)
    reachable = {p: r for p, r in obs.nodes.items() if r.reachable}
    sts_now = obs.sts.replicas if obs.sts is not None else want
    partition_now = obs.sts.partition if obs.sts is not None else want

    if ring is None:  # a new cluster: its nodes are starting and build the first ring
        down = _not_ready(obs, desired_ids(cluster))
        message = f"waiting for {', '.join(down)} to start" if down else "forming the ring"
        return Decision(want, want, "wait", "Pending", message)

    members = _members(obs, ring, desired_ids(cluster))
    degraded = tuple(f"{p} is not ready" for p in _not_ready(obs, list(ring.member_ids)))
    pending, stale = _in_flight(obs, ring, reachable)
    in_play = set(ring.member_ids) | (set(pending.member_ids) if pending is not None else set())
    sts_keep = max(want, sts_now if pending is not None or stale else 0, _max_ordinal(obs, in_play))

    if stale:  # abort first, or a later commit could install the wrong ring
        return Decision(
            sts_keep,
            partition_now,
            "abort",
            "Rebalancing",
            "aborting joining rings that are not the desired one: "
            + ", ".join(f"{p} (epoch {e})" for p, e in sorted(stale.items())),
            nodes=tuple(sorted(stale)),
            abort_epochs=stale,
            degraded=degraded,
        )

    if pending is not None:
        old = obs.rings.get(pending.epoch - 1)
        if old is None:
            return Decision(
                sts_keep,
                partition_now,
                "wait",
                "Rebalancing",
                f"joining ring epoch {pending.epoch}: no node reports epoch {pending.epoch - 1}",
                degraded=degraded,
            )
        views = {}
        for pod in participants(old, pending):
            report = obs.nodes.get(pod)
            views[pod] = report.view() if report is not None else NodeView(pod, False)
        step = next_step(pending, views)
        return Decision(
            sts_keep,
            partition_now,
            "rebalance",
            "Rebalancing",
            f"ring epoch {old.epoch} -> {pending.epoch}: {step.action}: {step.reason}",
            old=old,
            target=pending,
            step=step,
            degraded=degraded,
        )

    draining = _draining(obs, ring)
    sts_floor = max(want, _max_ordinal(obs, ring.member_ids), _max_ordinal(obs, draining))

    # A rolling update in flight goes on before anything else starts.
    outdated = _outdated(obs, sts_now)
    rolling = bool(outdated) and partition_now < sts_now
    if rolling:
        return _roll(obs, ring, outdated, max(sts_floor, sts_now), degraded)

    if members is None or not _same_members(ring, members):
        ids = desired_ids(cluster)
        waiting = _not_ready(obs, ids) + _not_ready(obs, list(ring.member_ids))
        waiting = sorted(set(waiting))
        if waiting:
            stalled = _stalled(obs, "Scaling")
            note = " (stalled: set replicas back to undo)" if stalled else ""
            return Decision(
                sts_floor,
                sts_floor,
                "wait",
                "Scaling",
                f"scaling to {want}: waiting for {', '.join(waiting)} to be Ready{note}",
                degraded=degraded,
                stalled=stalled,
            )
        strangers = [
            p
            for p in ids
            if p not in ring.member_ids
            and (reachable[p].epoch != ring.epoch or not reachable[p].url)
        ]
        if strangers:
            return Decision(
                sts_floor,
                partition_now,
                "wait",
                "Scaling",
                f"waiting for {', '.join(strangers)} to take ring epoch {ring.epoch}",
                degraded=degraded,
            )
        assert members is not None
        target = plan(ring, members)
        views = {
            pod: (obs.nodes[pod].view() if pod in obs.nodes else NodeView(pod, False))
            for pod in participants(ring, target)
        }
        step = next_step(target, views)
        verb = "adding" if len(target.member_ids) > len(ring.member_ids) else "removing"
        changed = set(target.member_ids) ^ set(ring.member_ids)
        return Decision(
            sts_floor,
            sts_floor,
            "rebalance",
            "Rebalancing",
            f"ring epoch {ring.epoch} -> {target.epoch}: {verb} {', '.join(sorted(changed))}",
            old=ring,
            target=target,
            step=step,
            degraded=degraded,
        )

    if draining:
        return Decision(
            sts_floor,
            sts_floor,
            "wait",
            "Rebalancing",
            f"waiting for {', '.join(draining)} to drop the data they no longer own",
            degraded=degraded,
            draining=draining,
        )

    sts = sts_floor
    outdated = _outdated(obs, sts)
    if outdated:
        return _roll(obs, ring, outdated, sts, degraded)
    phase = "Degraded" if degraded else "Ready"
    message = "; ".join(degraded) if degraded else f"{len(ring.member_ids)} members, all ready"
    return Decision(sts, sts, "none", phase, message, degraded=degraded)


def _roll(
    obs: Observed, ring: Ring, outdated: list[int], sts: int, degraded: tuple[str, ...]
) -> Decision:
    """One pod at a time, highest ordinal first, through the rollingUpdate partition."""
    assert obs.sts is not None
    partition = obs.sts.partition
    nxt = outdated[-1]
    done = sts - len(outdated)
    if partition <= nxt:  # the StatefulSet controller is replacing it now
        return Decision(
            sts,
            partition,
            "wait",
            "Upgrading",
            f"rolling update: {obs.cluster.pod(nxt)} is being replaced ({done}/{sts} updated)",
            degraded=degraded,
            stalled=_stalled(obs, "Upgrading"),
        )
    # Every other pod must be up; every node that answers (the one to replace
    # too, unless it is down: then replacing it is what may bring it back)
    # must have no hints waiting and no partition out of sync.
    others = [obs.cluster.pod(o) for o in range(sts) if o != nxt]
    blockers = [f"{p} is not ready" for p in _not_ready(obs, others)]
    nxt_pod = obs.cluster.pod(nxt)
    check = [p for p in others if p in ring.member_ids]
    if nxt_pod in ring.member_ids and obs.nodes.get(nxt_pod, _DOWN).reachable:
        check.append(nxt_pod)
    blockers += _unconverged(obs, check)
    if blockers:
        return Decision(
            sts,
            partition,
            "wait",
            "Upgrading",
            f"rolling update ({done}/{sts} updated) waits: {'; '.join(blockers)}",
            degraded=degraded,
            stalled=_stalled(obs, "Upgrading"),
        )
    return Decision(
        sts,
        nxt,
        "none",
        "Upgrading",
        f"rolling update: replacing {obs.cluster.pod(nxt)} ({done}/{sts} updated)",
        degraded=degraded,
    )
