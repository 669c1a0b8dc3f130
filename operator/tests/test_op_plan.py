"""Truth tables of `plan.decide`: what the operator does next, from a snapshot."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ringkv.ring import Member, Ring, initial_ring, rebalance
from ringkv_operator.model import parse_cluster
from ringkv_operator.plan import (
    DRAIN_TIMEOUT_S,
    STALL_AFTER_S,
    NodeReport,
    Observed,
    PodView,
    StsView,
    decide,
)

NOW = 1_000_000.0


def cluster(replicas: int, n: int = 3) -> Any:
    return parse_cluster(
        {
            "metadata": {"name": "kv", "namespace": "ns", "uid": "u"},
            "spec": {"replicas": replicas, "replicationFactor": n, "partitions": 16},
        }
    )


def url(i: int) -> str:
    return f"http://kv-{i}:8080"


def ring_of(count: int, epoch: int = 1) -> Ring:
    ring = initial_ring([Member(f"kv-{i}", url(i)) for i in range(3)], 16, 3)
    for size in range(4, count + 1):
        ring = rebalance(ring, [Member(f"kv-{i}", url(i)) for i in range(size)])
    while ring.epoch < epoch:
        ring = Ring(
            ring.epoch + 1, ring.partitions, ring.replication_factor, ring.members, ring.owner_table
        )
    return ring


def report(i: int, ring: Ring, **kw: Any) -> NodeReport:
    base = NodeReport(f"kv-{i}", True, ready=True, url=url(i), epoch=ring.epoch)
    return replace(base, **kw)


def observed(
    replicas: int,
    ring: Ring | None,
    pods: int,
    *,
    sts: StsView | None = None,
    reports: dict[int, NodeReport] | None = None,
    revisions: dict[int, str] | None = None,
    not_ready: tuple[int, ...] = (),
    **kw: Any,
) -> Observed:
    nodes = {}
    for i in range(pods):
        nodes[f"kv-{i}"] = (reports or {}).get(i) or (
            report(i, ring) if ring is not None else NodeReport(f"kv-{i}", False)
        )
    views = {
        i: PodView(i, i not in not_ready, revision=(revisions or {}).get(i, "r1"))
        for i in range(pods)
    }
    return Observed(
        cluster=cluster(replicas),
        image="img",
        sts=sts if sts is not None else StsView(pods, pods, "r1", "r1"),
        pods=views,
        nodes=nodes,
        rings={ring.epoch: ring} if ring is not None else {},
        now=NOW,
        **kw,
    )


def test_new_cluster_waits_for_its_nodes() -> None:
    d = decide(observed(3, None, 3))
    assert (d.action, d.phase, d.sts_replicas) == ("wait", "Pending", 3)
    assert "kv-0" in d.message


def test_steady_cluster_is_ready() -> None:
    d = decide(observed(3, ring_of(3), 3))
    assert (d.action, d.phase, d.sts_replicas, d.sts_partition) == ("none", "Ready", 3, 3)


def test_a_member_down_is_degraded_not_changed() -> None:
    ring = ring_of(3)
    reports = {1: NodeReport("kv-1", False)}
    d = decide(observed(3, ring, 3, reports=reports, not_ready=(1,)))
    assert (d.action, d.phase) == ("none", "Degraded")
    assert d.degraded == ("kv-1 is not ready",)


def test_scale_up_grows_the_statefulset_first_and_waits_for_the_pod() -> None:
    ring = ring_of(3)
    d = decide(observed(4, ring, 3))
    assert (d.action, d.phase, d.sts_replicas) == ("wait", "Scaling", 4)
    assert "kv-3" in d.message


def test_scale_up_joins_once_the_new_pod_is_ready_and_has_the_ring() -> None:
    ring = ring_of(3)
    reports = {3: report(3, ring, partitions_owned=0)}
    d = decide(observed(4, ring, 4, reports=reports))
    assert (d.action, d.phase, d.sts_replicas) == ("rebalance", "Rebalancing", 4)
    assert d.target is not None and d.old == ring
    assert set(d.target.member_ids) == {"kv-0", "kv-1", "kv-2", "kv-3"}
    assert d.step is not None and d.step.action == "join"
    assert set(d.step.nodes) == {"kv-0", "kv-1", "kv-2", "kv-3"}
    # a new pod that has not taken the ring yet is waited for
    stranger = {3: report(3, ring, epoch=0)}
    d = decide(observed(4, ring, 4, reports=stranger))
    assert (d.action, d.phase) == ("wait", "Scaling")


def test_a_joining_ring_is_driven_one_step() -> None:
    ring = ring_of(3)
    target = ring_of(4, epoch=2)
    joined = {i: report(i, ring, pending_epoch=2, pending_ring=target) for i in range(4)}
    d = decide(observed(4, ring, 4, reports=joined))
    assert d.action == "rebalance" and d.step is not None and d.step.action == "stream"
    synced = {
        i: report(i, ring, pending_epoch=2, pending_ring=target, in_sync=True) for i in range(4)
    }
    d = decide(observed(4, ring, 4, reports=synced))
    assert d.step is not None and d.step.action == "commit"


def test_a_commit_in_progress_is_finished_never_aborted() -> None:
    old, new = ring_of(3), ring_of(4, epoch=2)
    reports = {
        0: report(0, new),
        1: report(1, old, pending_epoch=2, pending_ring=new, in_sync=True),
        2: report(2, old, pending_epoch=2, pending_ring=new, in_sync=True),
        3: report(3, new),
    }
    obs = observed(3, new, 4, reports=reports)  # replicas changed back meanwhile
    obs = replace(obs, rings={1: old, 2: new})
    d = decide(obs)
    assert d.action == "rebalance" and d.step is not None and d.step.action == "commit"
    assert set(d.step.nodes) == {"kv-1", "kv-2"}
    assert d.sts_replicas == 4


def test_replicas_changed_during_a_join_abort_and_replan() -> None:
    ring = ring_of(3)
    target = ring_of(4, epoch=2)
    joined = {i: report(i, ring, pending_epoch=2, pending_ring=target) for i in range(4)}
    d = decide(observed(3, ring, 4, reports=joined))  # the user set replicas back to 3
    assert (d.action, d.phase) == ("abort", "Rebalancing")
    assert dict(d.abort_epochs) == {f"kv-{i}": 2 for i in range(4)}
    assert d.sts_replicas == 4  # kv-3 stays until nothing joins it any more
    # after the abort: the ring is what is wanted; kv-3 holds nothing and goes
    d = decide(observed(3, ring, 4))
    assert (d.action, d.sts_replicas) == ("none", 3)


def test_nodes_that_hold_another_ring_for_the_epoch_are_aborted_first() -> None:
    ring = ring_of(3)
    target = ring_of(4, epoch=2)
    other = Ring(2, 16, 3, ring.members, ring.owner_table)  # same epoch, other content
    reports = {i: report(i, ring, pending_epoch=2, pending_ring=target) for i in range(4)}
    reports[2] = report(2, ring, pending_epoch=2, pending_ring=other)
    d = decide(observed(4, ring, 4, reports=reports))
    assert d.action == "abort" and dict(d.abort_epochs) == {"kv-2": 2}


def test_a_stale_joining_ring_is_aborted() -> None:
    ring = ring_of(3, epoch=5)
    old_join = ring_of(4, epoch=3)
    reports = {1: report(1, ring, pending_epoch=3, pending_ring=old_join)}
    d = decide(observed(3, ring, 3, reports=reports))
    assert d.action == "abort" and dict(d.abort_epochs) == {"kv-1": 3}


def test_scale_down_moves_data_before_the_statefulset_shrinks() -> None:
    ring = ring_of(4)
    d = decide(observed(3, ring, 4))
    assert (d.action, d.sts_replicas) == ("rebalance", 4)
    assert d.target is not None and "kv-3" not in d.target.member_ids
    assert d.step is not None and "kv-3" in d.step.nodes  # the leaving node joins too


def test_after_the_commit_a_removed_pod_is_kept_until_it_has_dropped_its_data() -> None:
    ring = ring_of(3, epoch=2)  # kv-3 left the ring at epoch 2
    holding = {3: report(3, ring, entries=120)}
    d = decide(observed(3, ring, 4, reports=holding, committed_at=NOW - 10))
    assert (d.action, d.sts_replicas) == ("wait", 4)
    assert d.draining == ("kv-3",)
    empty = {3: report(3, ring, entries=0)}
    d = decide(observed(3, ring, 4, reports=empty, committed_at=NOW - 10))
    assert (d.action, d.sts_replicas) == ("none", 3)
    late = decide(observed(3, ring, 4, reports=holding, committed_at=NOW - DRAIN_TIMEOUT_S - 1))
    assert late.sts_replicas == 3  # a node that never drops is not waited for forever


def test_scale_that_cannot_finish_is_reported_stalled() -> None:
    ring = ring_of(3)
    obs = observed(4, ring, 4, not_ready=(3,), phase="Scaling", phase_since=NOW - STALL_AFTER_S - 1)
    d = decide(obs)
    assert (d.action, d.phase, d.stalled) == ("wait", "Scaling", True)
    assert "set replicas back" in d.message
    # setting replicas back undoes it: the pod that never got ready goes
    d = decide(replace(obs, cluster=cluster(3)))
    assert (d.action, d.sts_replicas) == ("none", 3)


def test_rolling_update_one_pod_at_a_time_highest_first() -> None:
    ring = ring_of(3)
    sts = StsView(3, 3, "r2", "r1")
    d = decide(observed(3, ring, 3, sts=sts))
    assert (d.phase, d.sts_partition) == ("Upgrading", 2)
    # the controller is replacing kv-2: wait
    sts = StsView(3, 2, "r2", "r1")
    d = decide(observed(3, ring, 3, sts=sts, not_ready=(2,), revisions={2: "r2"}))
    assert (d.action, d.sts_partition) == ("wait", 2)
    # kv-2 is back and ready at r2: kv-1 next
    d = decide(observed(3, ring, 3, sts=sts, revisions={2: "r2"}))
    assert (d.phase, d.sts_partition) == ("Upgrading", 1)
    # done: the partition goes back up, guarding against the next change
    done = decide(
        observed(3, ring, 3, sts=StsView(3, 0, "r2", "r2"), revisions=dict.fromkeys(range(3), "r2"))
    )
    assert (done.phase, done.sts_partition) == ("Ready", 3)


def test_rolling_update_waits_for_convergence() -> None:
    ring = ring_of(3)
    sts = StsView(3, 2, "r2", "r1")
    hints = {0: report(0, ring, hint_backlog=7)}
    d = decide(observed(3, ring, 3, sts=sts, revisions={2: "r2"}, reports=hints))
    assert (d.action, d.sts_partition) == ("wait", 2)
    assert "hints" in d.message
    drift = {1: report(1, ring, partitions_out_of_sync=2)}
    d = decide(observed(3, ring, 3, sts=sts, revisions={2: "r2"}, reports=drift))
    assert (d.action, d.sts_partition) == ("wait", 2)


def test_rolling_update_may_replace_the_pod_that_is_down() -> None:
    """A pod crash-looping on the old template is the one to update, not a reason to wait."""
    ring = ring_of(3)
    d = decide(
        observed(
            3,
            ring,
            3,
            sts=StsView(3, 3, "r2", "r1"),
            not_ready=(2,),
            reports={2: NodeReport("kv-2", False)},
        )
    )
    assert d.sts_partition == 2


def test_no_roll_while_the_controller_has_not_seen_the_template() -> None:
    ring = ring_of(3)
    d = decide(observed(3, ring, 3, sts=StsView(3, 3, "", "r1")))
    assert (d.action, d.phase) == ("none", "Ready")


def test_a_zone_change_that_moves_nothing_is_no_rebalance() -> None:
    ring = ring_of(3)
    obs = observed(3, ring, 3)
    pods = {i: replace(p, zone="z1") for i, p in obs.pods.items()}
    d = decide(replace(obs, pods=pods))
    assert d.action == "none"


def test_zones_reach_the_new_ring() -> None:
    ring = ring_of(3)
    reports = {3: report(3, ring)}
    obs = observed(4, ring, 4, reports=reports)
    pods = {i: replace(p, zone=f"z{i % 2}") for i, p in obs.pods.items()}
    d = decide(replace(obs, pods=pods))
    assert d.target is not None
    assert {m.id: m.zone for m in d.target.members} == {
        "kv-0": "z0",
        "kv-1": "z1",
        "kv-2": "z0",
        "kv-3": "z1",
    }
