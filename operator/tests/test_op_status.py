"""Unit tests of status, conditions, events, the CRD files and the leader rule."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from ringkv_operator import crds, leader
from ringkv_operator.plan import decide
from ringkv_operator.status import conditions, events, failed_status, iso, status_doc

from test_op_plan import NOW, observed, report, ring_of

ROOT = Path(__file__).resolve().parents[2]


def test_conditions_keep_their_transition_time_until_the_status_changes() -> None:
    first = conditions([], {"Ready": ("False", "Scaling", "a")}, 100.0, 1)
    later = conditions(first, {"Ready": ("False", "Rebalancing", "b")}, 200.0, 2)
    assert later[0]["lastTransitionTime"] == iso(100.0)
    assert (later[0]["reason"], later[0]["message"], later[0]["observedGeneration"]) == (
        "Rebalancing",
        "b",
        2,
    )
    flipped = conditions(later, {"Ready": ("True", "ClusterReady", "c")}, 300.0, 2)
    assert flipped[0]["lastTransitionTime"] == iso(300.0)


def test_conditions_not_named_are_kept() -> None:
    first = conditions([], {"VolumeExpansion": ("True", "Expanding", "x")}, 1.0, 1)
    later = conditions(first, {"Ready": ("True", "ClusterReady", "y")}, 2.0, 1)
    assert [c["type"] for c in later] == ["Ready", "VolumeExpansion"]


def test_status_of_a_ready_cluster() -> None:
    ring = ring_of(3)
    obs = observed(
        3, ring, 3, reports={0: report(0, ring, hint_backlog=2, last_anti_entropy_ms=5000)}
    )
    doc = status_doc(obs, decide(obs), {})
    assert doc["phase"] == "Ready"
    assert (doc["replicas"], doc["readyReplicas"], doc["ringEpoch"], doc["members"]) == (3, 3, 1, 3)
    assert doc["convergence"]["hintBacklog"] == 2
    assert "lastAntiEntropy" not in doc["convergence"]  # two nodes have not run a round
    types = {c["type"]: c["status"] for c in doc["conditions"]}
    assert types == {
        "Ready": "True",
        "Progressing": "False",
        "Degraded": "False",
        "Rebalancing": "False",
    }
    assert doc["nodes"][0] == {
        "pod": "kv-0",
        "ready": True,
        "epoch": 1,
        "partitions": 0,
        "hintBacklog": 2,
        "partitionsOutOfSync": 0,
        "usedBytes": 0,
    }
    assert doc["selector"] == (
        "app.kubernetes.io/name=ringkv,app.kubernetes.io/instance=kv,"
        "app.kubernetes.io/component=storage"
    )


def test_rebalance_status_records_the_move_and_its_end() -> None:
    ring = ring_of(3)
    target = ring_of(4, epoch=2)
    joined = {
        i: report(
            i,
            ring,
            pending_epoch=2,
            pending_ring=target,
            partitions_to_stream=4,
            partitions_streamed=1,
        )
        for i in range(4)
    }
    obs = observed(4, ring, 4, reports=joined)
    doc = status_doc(obs, decide(obs), {})
    assert doc["phase"] == "Rebalancing"
    assert doc["rebalance"] == {
        "state": "Streaming",
        "fromEpoch": 1,
        "toEpoch": 2,
        "fromMembers": 3,
        "toMembers": 4,
        "partitionsMoved": 4,
        "partitionsTotal": 16,
        "startedAt": iso(NOW),
    }
    done_obs = replace(observed(4, target, 4), now=NOW + 30)
    done = status_doc(done_obs, decide(done_obs), doc)
    assert done["rebalance"]["state"] == "Done"
    assert done["rebalance"]["completedAt"] == iso(NOW + 30)
    assert done["rebalance"]["startedAt"] == iso(NOW)
    assert done["phase"] == "Ready"


def test_events_for_phase_changes_and_transitions_only() -> None:
    ring = ring_of(3)
    ready_obs = observed(3, ring, 3)
    ready = status_doc(ready_obs, decide(ready_obs), {})
    first = events({}, ready)
    assert [(e.type, e.reason) for e in first] == [("Normal", "Ready"), ("Normal", "ClusterReady")]
    assert events(ready, status_doc(ready_obs, decide(ready_obs), ready)) == []
    down_obs = observed(3, ring, 3, not_ready=(1,))
    down = status_doc(down_obs, decide(down_obs), ready)
    kinds = {(e.type, e.reason) for e in events(ready, down)}
    assert ("Warning", "Degraded") in kinds and ("Warning", "PodsNotReady") in kinds


def test_failed_status_names_the_problem() -> None:
    doc = failed_status({}, "StatefulSet kv exists and is not owned by this KVCluster", 5.0, 3)
    assert doc["phase"] == "Failed" and doc["observedGeneration"] == 3
    assert {c["type"]: c["status"] for c in doc["conditions"]}["Degraded"] == "True"
    waiting = failed_status({}, "waiting for Secret s", 5.0, 3, "Pending")
    assert waiting["phase"] == "Pending"


def test_committed_crd_files_are_current() -> None:
    """`make crds` regenerates them from crds.py; this fails when someone forgot."""
    for name, text in crds.files().items():
        path = ROOT / "operator" / "crds" / name
        assert path.read_text() == text, f"{path} is stale: run `make crds`"


def test_every_crd_field_has_a_description() -> None:
    def walk(schema: dict, path: str) -> list[str]:
        missing = []
        for key, sub in (schema.get("properties") or {}).items():
            here = f"{path}.{key}"
            if key in ("apiVersion", "kind", "metadata"):
                continue
            if not sub.get("description"):
                missing.append(here)
            missing += walk(sub, here)
            if "items" in sub:
                missing += walk(sub["items"], here + "[]")
        return missing

    for crd in crds.all_crds():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert walk(schema, crd["spec"]["names"]["kind"]) == []
        yaml.safe_load(crds.render(crd))  # renders as YAML


@pytest.mark.parametrize(
    ("lease", "verdict"),
    [
        (None, "create"),
        (leader.LeaseView("me", NOW - 100, 15, 0), "renew"),
        (leader.LeaseView("other", NOW - 5, 15, 0), "wait"),
        (leader.LeaseView("other", NOW - 16, 15, 0), "take"),
        (leader.LeaseView("", NOW - 1, 15, 3), "take"),
    ],
)
def test_leader_rule(lease: leader.LeaseView | None, verdict: str) -> None:
    assert leader.decide(lease, "me", NOW) == verdict


def test_the_field_reference_in_docs_is_current() -> None:
    doc = (ROOT / "docs" / "operator.md").read_text()
    assert "<!-- BEGIN KVCluster fields -->\n| field |" in doc
    assert crds.embed(doc) == doc, "docs/operator.md's field table is stale: run `make crds`"


def test_status_patch_nulls_what_is_gone_at_any_depth() -> None:
    from ringkv_operator.status import status_patch

    previous = {"phase": "Ready", "backup": {"next": "t2", "pruning": ["a"]}, "restore": {"x": 1}}
    doc = {"phase": "Ready", "backup": {"next": "t3"}, "lastBackup": {"name": "b"}}
    assert status_patch(previous, doc) == {
        "phase": "Ready",
        "backup": {"next": "t3", "pruning": None},
        "restore": None,
        "lastBackup": {"name": "b"},
    }
