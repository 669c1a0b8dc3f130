"""Tier 4: `kubectl ringkv status` and `connect` on kind, as a user runs them.

The operator is installed from manifests/ (the `operator` fixture of e2e/conftest.py)
and reconciles a 3-pod KVCluster to Ready. kubectl finds the plugin on PATH
(the venv's `kubectl-ringkv`); `status` shows the Ready cluster and a line
per pod; `connect` runs in the background with its output in a file, which a
shell sources (`. env.sh`, as docs/operator.md shows) before the `ringkv` CLI
puts and gets a key through the forwarded client Service, with direct
routing off as `connect` says. Ctrl-C (SIGINT) then ends it, and its
`kubectl port-forward` with it. Needs `make e2e`.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubeharness.kind import Kubectl

from kindlib import READY_TIMEOUT, namespace, ready, user_env, wait

pytestmark = [pytest.mark.kind, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def ns(kubectl: Kubectl, operator: None, request: pytest.FixtureRequest) -> Iterator[str]:
    with namespace(kubectl, "e2e-plugin", request) as name:
        kubectl.apply(
            {
                "apiVersion": "ringkv.io/v1alpha1",
                "kind": "KVCluster",
                "metadata": {"name": "kv"},
                "spec": {"replicas": 3, "partitions": 64},
            },
            name,
        )
        wait(ready(kubectl, name, readyReplicas=3), READY_TIMEOUT, "KVCluster Ready")
        yield name


def test_kubectl_ringkv_status(kubectl: Kubectl, ns: str) -> None:
    r = subprocess.run(
        [kubectl.binary, "ringkv", "status", "kv", "-n", ns],
        capture_output=True,
        text=True,
        timeout=60,
        env=user_env(kubectl),
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[2].startswith("Phase:       Ready"), r.stdout
    assert "Replicas:    3 of 3 ready (spec.replicas 3)" in lines
    assert "Ring:        epoch 1, 3 members, 64 partitions, N=3" in lines
    pods = r.stdout.split("\nPods:\n")[1].splitlines()
    assert [p.split()[:2] for p in pods[1:]] == [["kv-0", "yes"], ["kv-1", "yes"], ["kv-2", "yes"]]
    assert all(p.split()[4] == "64" for p in pods[1:]), r.stdout  # N=3 of 3: every partition


def _interruptible() -> None:
    """SIGINT as a terminal's Ctrl-C meets it: a test run started in the
    background (`make e2e &`) ignores SIGINT, its children inherit that, and
    the plugin then never saw the test's Ctrl-C (a 30 s timeout)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_kubectl_ringkv_connect_then_the_ringkv_cli(
    kubectl: Kubectl, ns: str, tmp_path: Path
) -> None:
    env = user_env(kubectl)
    env_file = tmp_path / "env.sh"
    with open(env_file, "w") as out, open(tmp_path / "connect.err", "w") as err:
        connect = subprocess.Popen(
            [kubectl.binary, "ringkv", "connect", "kv", "-n", ns],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_interruptible,
        )
    try:
        wait(
            lambda: env_file.read_text().count("\n") >= 3 or connect.poll() is not None,
            120,
            "connect to print its export lines",
        )
        assert connect.poll() is None, (tmp_path / "connect.err").read_text()
        lines = env_file.read_text().splitlines()
        assert lines[0].startswith("export RINGKV_URL=http://127.0.0.1:")
        assert lines[1].startswith("export RINGKV_TOKEN=")
        assert lines[2] == "export RINGKV_DIRECT=0"

        def sh(command: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["bash", "-c", f". {env_file} && {command}"],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
                check=False,
            )

        put = sh("ringkv put e2e:plugin hello")
        assert (put.returncode, put.stdout) == (0, "created\n"), put.stderr
        got = sh("ringkv get e2e:plugin")
        assert (got.returncode, got.stdout) == (0, "hello\n"), got.stderr
        many = sh("for i in $(seq 1 50); do ringkv put e2e:k$i v$i >/dev/null || exit 1; done")
        assert many.returncode == 0, many.stderr
        keys = sh("ringkv keys --prefix e2e:k")
        assert len(keys.stdout.split()) == 50, keys.stdout + keys.stderr
        status = sh("ringkv status")  # only the forwarded node is asked
        assert status.returncode == 0, status.stdout + status.stderr
        assert "not asked (direct routing off" in status.stdout, status.stdout
        assert connect.poll() is None  # still up
    finally:
        if connect.poll() is None:
            connect.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = connect.wait(30)
    err = (tmp_path / "connect.err").read_text()
    assert code == 0, err
    assert "this stays up until Ctrl-C" in err and "Traceback" not in err
