"""`kubectl ringkv`'s pure core: status text, units, contexts, errors, connect lines."""

from __future__ import annotations

import copy
import datetime as dt
import re
from typing import Any

import pytest

from ringkv import _kubeview as view

from kubeview_cases import NOW, REBALANCING, rebalancing_status


def ago(seconds: float) -> str:
    return dt.datetime.fromtimestamp(NOW - seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cluster(status: dict[str, Any] | None, generation: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "ringkv.io/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": "kv", "namespace": "shop", "generation": generation},
        "spec": {"replicas": 4, "partitions": 256, "replicationFactor": 3},
        "status": status or {},
    }


def test_a_rebalancing_cluster_shows_every_section() -> None:
    assert view.format_status(cluster(rebalancing_status()), NOW) == REBALANCING


def test_a_ready_cluster_after_its_rebalance() -> None:
    st = rebalancing_status()
    st.update(phase="Ready", message="4 members, all ready", readyReplicas=4, members=4)
    st["ringEpoch"] = 3
    st["rebalance"] |= {"state": "Done", "completedAt": ago(60), "partitionsMoved": 192}
    st["nodes"][3] = {
        "pod": "kv-3",
        "ready": True,
        "epoch": 3,
        "partitions": 192,
        "hintBacklog": 0,
        "partitionsOutOfSync": 0,
        "usedBytes": 0,
    }
    st["lastBackup"] = {"name": "kv-nightly-1", "completedAt": ago(7200)}
    text = view.format_status(cluster(st), NOW)
    assert "Rebalance:   Done: epoch 2 -> 3, 3 -> 4 members, committed 60s ago\n" in text
    assert "Last backup: kv-nightly-1, 120m ago\n" in text
    pods = text.split("Pods:\n")[1].splitlines()
    assert pods[0].split() == [
        "POD", "READY", "ZONE", "EPOCH", "PARTITIONS", "HINTS", "OUT-OF-SYNC", "USED"
    ]  # fmt: skip
    assert pods[4] == "  kv-3  yes    -      3      192         0      0            0 B"
    assert view.problems(cluster(st)) == []


def test_an_upgrade_in_progress_and_a_status_behind_the_spec() -> None:
    st = rebalancing_status()
    del st["rebalance"]
    st["upgrade"] = {"revision": "kv-8a1c", "updated": 1, "partition": 3}
    text = view.format_status(cluster(st, generation=3), NOW)
    assert "Upgrade:     1 of 4 pods at revision kv-8a1c (partition 3)\n" in text
    assert "Note:        this status is of generation 2, the spec is at 3: not caught up\n" in text
    assert "Rebalance" not in text


def test_no_status_yet_says_what_to_check() -> None:
    text = view.format_status(cluster(None), NOW)
    assert text.splitlines()[2] == (
        "Phase:       (no status yet: the operator has not reconciled it; is it running? "
        "kubectl -n ringkv-system get deploy ringkv-operator)"
    )
    assert view.problems(cluster(None)) == ["no status yet (is the operator running?)"]


def test_problems_name_the_pods_and_the_phase() -> None:
    st = rebalancing_status()
    assert view.problems(cluster(st)) == ["kv-3 unreachable"]
    st["phase"] = "Degraded"
    st["nodes"][0]["ready"] = False
    assert view.problems(cluster(st)) == ["phase Degraded", "kv-0 not ready", "kv-3 unreachable"]


def test_odd_fields_do_not_break_the_text() -> None:
    """A status from an older operator, or a hand-made one: missing and wrong types."""
    st: dict[str, Any] = {
        "phase": "Pending",
        "nodes": [{"pod": "kv-0", "usedBytes": "lots", "epoch": True}, {}],
        "conditions": [{"type": "Ready"}],
        "rebalance": {"state": "Joining"},
    }
    text = view.format_status(cluster(copy.deepcopy(st)), NOW)
    assert "Phase:       Pending\n" in text
    assert "Replicas:    - of - ready (spec.replicas 4)\n" in text
    assert "Rebalance:   Joining: epoch - -> -, - -> - members\n" in text
    assert "  Ready  ?       -       -\n" in text  # no message: no trailing blanks
    assert "  kv-0  no     -     -      -           -      -            -\n" in text
    assert "  ?     no     -     -      -           -      -            -\n" in text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1_572_864, "1.5 MiB"),
        (5 * 2**40, "5.0 TiB"),
        (3 * 2**60, "3072.0 PiB"),
        (None, "-"),
        (-1, "-"),
        (True, "-"),
    ],
)
def test_human_bytes(n: object, text: str) -> None:
    assert view.human_bytes(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (130, "2m10s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 60, "3h1m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (2 * 86400, "2d"),
        (2 * 86400 + 3600, "2d1h"),
        (30 * 86400, "30d"),
        (3 * 365 * 86400, "3y"),
        (3 * 365 * 86400 + 86400, "3y1d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_ages_read_like_kubectls(seconds: float, text: str) -> None:
    assert view.human_age(seconds) == text


def test_contexts_follow_kubectls_merge_rules() -> None:
    first = {
        "current-context": "dev",
        "contexts": [{"name": "dev", "context": {"cluster": "c", "namespace": "team"}}],
    }
    second = {
        "current-context": "prod",
        "contexts": [
            {"name": "dev", "context": {"cluster": "c", "namespace": "other"}},
            {"name": "prod", "context": {"cluster": "p"}},
        ],
    }
    assert view.pick_context([first, second], None) == ("dev", "team")  # first file wins
    assert view.pick_context([second, first], None) == ("prod", None)
    assert view.pick_context([first, second], "prod") == ("prod", None)
    with pytest.raises(ValueError, match="context 'stage' is not in the kubeconfig"):
        view.pick_context([first], "stage")
    with pytest.raises(ValueError, match="no current context: give --context"):
        view.pick_context([{"contexts": []}], None)


@pytest.mark.parametrize(
    ("status", "body", "text", "code"),
    [
        (
            404,
            '{"kind":"Status","message":"kvclusters.ringkv.io \\"kv\\" not found"}',
            'not found: kvclusters.ringkv.io "kv" not found',
            1,
        ),
        (
            403,
            b'{"message": "kvclusters.ringkv.io is forbidden:\\n user x cannot get"}',
            "the API server refused the request (403): kvclusters.ringkv.io is forbidden: "
            "user x cannot get",
            2,
        ),
        (401, "", "the API server refused the request (401): Unauthorized", 2),
        (
            409,
            '{"message": "kvbackups.ringkv.io \\"b\\" already exists"}',
            'the API server refused the request (409): kvbackups.ringkv.io "b" already exists',
            2,
        ),
        (500, "<html>oops</html>", "the API server answered 500: <html>oops</html>", 3),
        (503, None, "the API server answered 503: Unauthorized", 3),
    ],
)
def test_api_errors_are_one_line_with_the_cli_exit_codes(
    status: int, body: object, text: str, code: int
) -> None:
    assert view.api_error(status, "Unauthorized", body) == (text, code)


def test_names_are_dns_labels() -> None:
    assert view.valid_name("kv-1") and view.valid_name("a" * 63)
    for bad in ("", "Kv", "kv_1", "-kv", "kv-", "a" * 64, "kv.1"):
        assert not view.valid_name(bad), bad


def test_the_token_secret_is_the_specs_or_name_auth() -> None:
    assert view.token_secret(cluster(None)) == "kv-auth"
    obj = cluster(None) | {"spec": {"auth": {"secretName": "shared-token"}}}
    assert view.token_secret(obj) == "shared-token"
    assert view.token_secret(cluster(None) | {"spec": {"auth": {"secretName": ""}}}) == "kv-auth"


def test_port_forward_command_line() -> None:
    assert view.port_forward_argv("kubectl", "kv", "shop", None) == [
        "kubectl", "port-forward", "svc/kv", ":8080", "--address", "127.0.0.1", "-n", "shop"
    ]  # fmt: skip
    assert view.port_forward_argv(
        "/opt/kubectl", "kv", "shop", 7100, context="kind", kubeconfig="/k.yaml"
    )[1:] == [
        "port-forward", "svc/kv", "7100:8080", "--address", "127.0.0.1", "-n", "shop",
        "--context", "kind", "--kubeconfig", "/k.yaml",
    ]  # fmt: skip


def test_the_forwarded_port_is_read_from_kubectls_line() -> None:
    assert view.forwarded_port("Forwarding from 127.0.0.1:43121 -> 8080\n") == 43121
    assert view.forwarded_port("Forwarding from [::1]:43121 -> 8080") is None
    assert view.forwarded_port("Handling connection for 43121") is None


def test_connect_prints_shell_lines_for_the_cli() -> None:
    assert view.connect_lines(43121, "s3cr3t/+=") == [
        "export RINGKV_URL=http://127.0.0.1:43121",
        "export RINGKV_TOKEN=s3cr3t/+=",
        "export RINGKV_DIRECT=0",
    ]
    assert view.connect_lines(1, "it's")[1] == "export RINGKV_TOKEN='it'\"'\"'s'"


def test_a_failed_port_forward_says_kubectls_error() -> None:
    said = [
        "E0601 12:00:00.000 portforward.go:413] an error occurred forwarding 43121 -> 8080\n",
        "error: lost connection to pod\n",
        "\n",
    ]
    assert (
        view.forward_failed(1, said)
        == "kubectl port-forward exited (1): error: lost connection to pod"
    )
    assert view.forward_failed(-15, []) == "kubectl port-forward exited (-15): no message"


def test_backup_destination_name_and_lines() -> None:
    kv = {
        "metadata": {"name": "kv"},
        "spec": {"backup": {"destination": {"pvc": {"claimName": "b"}}}},
    }
    assert view.backup_destination(kv) == {"pvc": {"claimName": "b"}}
    assert view.backup_destination(kv, pvc="other") == {"pvc": {"claimName": "other"}}
    assert view.backup_destination(
        kv, s3="s3://bk/a/b/", s3_endpoint="http://s3:5000", s3_path_style=True
    ) == {"s3": {"bucket": "bk", "prefix": "a/b", "endpoint": "http://s3:5000", "pathStyle": True}}
    for pvc, s3, words in (("a", "s3://b", "not both"), (None, "bk/a", "s3://bucket"),
                           (None, "s3://", "s3://bucket")):  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(words)):
            view.backup_destination(kv, pvc=pvc, s3=s3)
    with pytest.raises(ValueError, match=r"has no spec\.backup\.destination"):
        view.backup_destination({"metadata": {"name": "kv"}, "spec": {}})
    assert view.backup_name("kv", 1796263200.0) == "kv-20261203020000"
    assert len(view.backup_name("a" * 52, 0.0)) <= 63
    obj = view.backup_object("kv", "kv-1", {"pvc": {"claimName": "b"}}, "restore")
    assert obj["kind"] == "KVBackup" and obj["spec"]["verify"] == "restore"
    assert view.backup_line("b", {}, 1.2) == "kvbackup/b: Pending | 1s"
    done = {"phase": "Completed", "keys": 12000, "sizeBytes": 2048, "location": "pvc://b/x"}
    assert view.backup_line("b", done, 30) == (
        "kvbackup/b: Completed | 30s | 12,000 keys, 2.0 KiB, at pvc://b/x"
    )
    failed = {"phase": "Failed", "message": "Job b failed: boom"}
    assert view.backup_line("b", failed, 3) == "kvbackup/b: Failed | 3s | Job b failed: boom"
