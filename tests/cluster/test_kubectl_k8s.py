"""`kubectl-ringkv` against the real tier-3 kube-apiserver, as a subprocess with --kubeconfig.

`status`: a KVCluster with a realistic status patched into its status
subresource (as the operator writes it), a missing cluster, a missing and a
malformed namespace, the namespace of the kubeconfig's context, and kubectl
itself finding the plugin on PATH. `connect`: the token Secret read from the
API server, then `$KUBECTL port-forward`. Tier 3 has no kubelet, so a real
port-forward cannot carry bytes here: the happy path runs the stand-in of
portforward.py in kubectl's place, forwarding to a real node process, and
the `ringkv` CLI puts and gets through the lines `connect` printed; the real
kubectl is run where it fails for real (a pod that is not running). The
whole path on kind is e2e/tests/test_kind_plugin.py.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeview_cases import REBALANCING, rebalancing_status
from nodeproc import TOKEN, Cluster, free_port

# `kube` (the operator's API seam, as the admin) and `crds` come from the root conftest.py
pytestmark = [pytest.mark.k8s_api, pytest.mark.timeout(180), pytest.mark.usefixtures("crds")]

BIN = Path(sys.executable).parent
PLUGIN = str(BIN / "kubectl-ringkv")
TESTS = Path(__file__).resolve().parent
BASE = "/apis/ringkv.io/v1alpha1/namespaces"


def real_kubectl() -> str | None:
    from kubeharness._assets import default_bin_dir

    path = os.environ.get("KUBECTL") or str(default_bin_dir() / "kubectl")
    return path if os.access(path, os.X_OK) else shutil.which("kubectl")


def create_cluster(kube: Any, ns: str, name: str = "kv", **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "ringkv.io/v1alpha1",
        "kind": "KVCluster",
        "metadata": {"name": name},
        "spec": {"replicas": 4, **spec},
    }
    return dict(kube.request("POST", f"{BASE}/{ns}/kvclusters", body))


def env(**extra: str) -> dict[str, str]:
    """The plugin's environment: no KUBECONFIG of the test session (it uses --kubeconfig)."""
    out = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)}
    out = {k: v for k, v in out.items() if not k.startswith(("RINGKV_", "STANDIN_"))}
    out["PATH"] = f"{BIN}:{out.get('PATH', '/usr/bin:/bin')}"
    return out | extra


def plugin(*argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PLUGIN, *argv], capture_output=True, text=True, timeout=60, env=env(**extra), check=False
    )


def section(text: str, title: str) -> list[str]:
    return text.split(f"\n{title}:\n")[1].split("\n\n")[0].splitlines()


def test_status_shows_the_kvclusters_table(
    kube: Any, kube_namespace: str, kube_control_plane: Any
) -> None:
    cfg = str(kube_control_plane.kubeconfig)
    create_cluster(kube, kube_namespace)
    kube.patch_cluster_status(kube_namespace, "kv", rebalancing_status(time.time()))

    r = plugin("status", "kv", "-n", kube_namespace, "--kubeconfig", cfg)
    assert r.returncode == 3, r.stderr  # kv-3 unreachable: not healthy, as `ringkv status`
    assert r.stderr == "kubectl-ringkv: not healthy: kv-3 unreachable\n"
    lines = r.stdout.splitlines()
    assert lines[:2] == ["Name:        kv", f"Namespace:   {kube_namespace}"]
    assert lines[2].startswith("Phase:       Rebalancing for 2m")
    assert "Replicas:    3 of 4 ready (spec.replicas 4)" in lines
    assert "Ring:        epoch 2, 3 members, 256 partitions, N=3" in lines  # the CRD's defaults
    assert section(r.stdout, "Pods") == section(REBALANCING, "Pods")
    conditions = [line.split()[:3] for line in section(r.stdout, "Conditions")]
    assert conditions == [
        ["TYPE", "STATUS", "REASON"],
        ["Degraded", "True", "PodsNotReady"],
        ["Progressing", "True", "Rebalancing"],
        ["Ready", "False", "Rebalancing"],
        ["Rebalancing", "True", "Streaming"],
    ]

    r = plugin("status", "kv", "-o", "json", "-n", kube_namespace, "--kubeconfig", cfg)
    assert r.returncode == 3
    assert json.loads(r.stdout) == kube.cluster(kube_namespace, "kv")["status"]

    healthy = rebalancing_status(time.time())
    healthy["nodes"][3] = dict(healthy["nodes"][0], pod="kv-3")
    kube.patch_cluster_status(kube_namespace, "kv", {"nodes": healthy["nodes"]})
    r = plugin("status", "kv", "-n", kube_namespace, "--kubeconfig", cfg)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr


def test_status_of_what_is_not_there(
    kube: Any, kube_namespace: str, kube_control_plane: Any
) -> None:
    cfg = str(kube_control_plane.kubeconfig)
    r = plugin("status", "nope", "-n", kube_namespace, "--kubeconfig", cfg)
    assert (r.returncode, r.stdout) == (1, "")
    assert (
        r.stderr == f'kubectl-ringkv: kvcluster "nope" not found in namespace "{kube_namespace}"\n'
    )

    r = plugin("status", "kv", "-n", "no-such-namespace", "--kubeconfig", cfg)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (
        'kubectl-ringkv: kvcluster "kv" not found in namespace "no-such-namespace" '
        "(the namespace does not exist)\n"
    )

    r = plugin("status", "kv", "-n", "Not_A_Namespace", "--kubeconfig", cfg)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (
        "kubectl-ringkv: namespace 'Not_A_Namespace' is not a valid name (a DNS label)\n"
    )


def test_the_namespace_comes_from_the_kubeconfig_context(
    kube: Any, kube_namespace: str, kube_control_plane: Any, tmp_path: Path
) -> None:
    create_cluster(kube, kube_namespace)
    doc = yaml.safe_load(Path(kube_control_plane.kubeconfig).read_text())
    for ctx in doc["contexts"]:
        ctx["context"]["namespace"] = kube_namespace
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(yaml.safe_dump(doc))
    r = plugin("status", "kv", KUBECONFIG=str(cfg))  # read at run time, as kubectl does
    assert r.returncode == 3  # no status yet: no operator here
    assert r.stdout.splitlines()[:2] == ["Name:        kv", f"Namespace:   {kube_namespace}"]
    assert r.stderr == "kubectl-ringkv: not healthy: no status yet (is the operator running?)\n"


def test_kubectl_finds_the_plugin_on_path(
    kube: Any, kube_namespace: str, kube_control_plane: Any
) -> None:
    kubectl = real_kubectl()
    if kubectl is None:
        pytest.skip("no kubectl (make k8s-tools, or $KUBECTL)")
    create_cluster(kube, kube_namespace)
    kube.patch_cluster_status(kube_namespace, "kv", rebalancing_status(time.time()))
    cfg = str(kube_control_plane.kubeconfig)
    # kubectl takes no flags before a plugin's name: they go after it, to the plugin
    r = subprocess.run(
        [kubectl, "ringkv", "status", "kv", "-n", kube_namespace, "--kubeconfig", cfg],
        capture_output=True,
        text=True,
        timeout=60,
        env=env(),
        check=False,
    )
    assert r.returncode == 3, r.stderr
    assert section(r.stdout, "Pods") == section(REBALANCING, "Pods")


# -- connect --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real 3-node cluster on loopback: the pods behind svc/kv."""
    c = Cluster.create(tmp_path_factory.mktemp("kubectl-nodes"))
    c.start()
    yield c
    c.kill_all()


@pytest.fixture
def standin(tmp_path: Path) -> Path:
    """An executable `kubectl` that is portforward.py's stand-in."""
    path = tmp_path / "kubectl"
    path.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(TESTS)!r})\n"
        "from portforward import main\nsys.exit(main())\n"
    )
    path.chmod(0o755)
    return path


def secret(kube: Any, ns: str, name: str, token: str) -> None:
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": ns},
            "stringData": {"token": token},
        }
    )


# Run a command with SIGINT at its default, as a terminal's Ctrl-C finds it: a
# suite started in the background of a non-interactive shell (`make test &`)
# has SIGINT ignored, its children inherit that, and Python then leaves it
# ignored, so the Ctrl-C case would hang only there. The exec keeps the pid.
SIGINT_DEFAULT = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]


class Connect:
    """`kubectl-ringkv connect` running: its stdout lines as they come, then its end."""

    def __init__(self, *argv: str, **extra: str) -> None:
        self.proc = subprocess.Popen(
            [*SIGINT_DEFAULT, PLUGIN, "connect", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env(**extra),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def line(self, timeout: float = 30) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            self.stop(signal.SIGKILL)
            pytest.fail(f"connect printed nothing in {timeout} s: {self.stderr()}")

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(20)

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def __enter__(self) -> Connect:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(20)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def exports(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        assert line.startswith("export "), line
        key, _, value = line[len("export ") :].partition("=")
        out[key] = value
    return out


def ringkv(*argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ringkv"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env(**extra),
        check=False,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_connect_prints_what_the_cli_needs_and_stays_up_until_stopped(
    kube: Any,
    kube_namespace: str,
    kube_control_plane: Any,
    node: Cluster,
    standin: Path,
    tmp_path: Path,
    sig: int,
) -> None:
    cfg = str(kube_control_plane.kubeconfig)
    create_cluster(kube, kube_namespace)
    secret(kube, kube_namespace, "kv-auth", TOKEN)
    argv_file = tmp_path / "argv.json"
    with Connect(
        "kv",
        "-n",
        kube_namespace,
        "--kubeconfig",
        cfg,
        KUBECTL=str(standin),
        STANDIN_TARGET=f"127.0.0.1:{node.nodes[0].port}",
        STANDIN_ARGV=str(argv_file),
    ) as c:
        check_connected(c, argv_file, kube_namespace, cfg, sig)


def check_connected(c: Connect, argv_file: Path, ns: str, cfg: str, sig: int) -> None:
    got = exports([c.line(), c.line(), c.line()])
    assert got["RINGKV_URL"].startswith("http://127.0.0.1:")
    assert (got["RINGKV_TOKEN"], got["RINGKV_DIRECT"]) == (TOKEN, "0")
    assert json.loads(argv_file.read_text()) == [
        "port-forward", "svc/kv", ":8080", "--address", "127.0.0.1",
        "-n", ns, "--kubeconfig", cfg,
    ]  # fmt: skip

    for _ in range(3):  # many connections: kubectl's "Handling connection" lines are drained
        assert ringkv("put", "via-connect", "hello", **got).returncode == 0
    r = ringkv("get", "via-connect", **got)
    assert (r.returncode, r.stdout) == (0, "hello\n"), r.stderr
    assert c.proc.poll() is None  # still up

    assert c.stop(sig) == 0
    err = c.stderr()
    assert "this stays up until Ctrl-C" in err.splitlines()[0], err
    assert "Traceback" not in err
    assert ringkv("get", "via-connect", **got).returncode == 3  # the forward is gone


def test_connect_ends_with_an_error_when_the_port_forward_dies(
    kube: Any, kube_namespace: str, kube_control_plane: Any, node: Cluster, standin: Path
) -> None:
    create_cluster(kube, kube_namespace, auth={"secretName": "shared-token"})
    secret(kube, kube_namespace, "shared-token", TOKEN)
    with Connect(
        "kv",
        "-o",
        "json",
        "--port",
        str(free_port()),
        "-n",
        kube_namespace,
        "--kubeconfig",
        str(kube_control_plane.kubeconfig),
        KUBECTL=str(standin),
        STANDIN_TARGET=f"127.0.0.1:{node.nodes[0].port}",
        STANDIN_DIE_AFTER="1",
    ) as c:
        doc = json.loads(c.line())
        assert (doc["token"], doc["direct"]) == (TOKEN, False)  # from spec.auth.secretName
        env = {"RINGKV_URL": doc["url"], "RINGKV_TOKEN": doc["token"], "RINGKV_DIRECT": "0"}
        r = ringkv("get", "x", **env)
        assert r.returncode == 1  # not found: it got through once
        assert c.proc.wait(20) == 3
        assert c.stderr().splitlines()[-1] == (
            "kubectl-ringkv: kubectl port-forward exited (1): error: lost connection to pod"
        )


def test_connect_refusals_are_one_line(
    kube: Any, kube_namespace: str, kube_control_plane: Any, tmp_path: Path
) -> None:
    cfg = str(kube_control_plane.kubeconfig)
    where = ["-n", kube_namespace, "--kubeconfig", cfg]
    r = plugin("connect", "nope", *where)
    assert (r.returncode, r.stdout) == (1, "")
    assert (
        r.stderr == f'kubectl-ringkv: kvcluster "nope" not found in namespace "{kube_namespace}"\n'
    )

    create_cluster(kube, kube_namespace)
    r = plugin("connect", "kv", *where)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (
        f'kubectl-ringkv: the token Secret "kv-auth" is not in namespace "{kube_namespace}"\n'
    )

    secret(kube, kube_namespace, "kv-auth", TOKEN)
    r = plugin("connect", "kv", *where, KUBECTL=str(tmp_path / "no-kubectl"))
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (
        f"kubectl-ringkv: cannot run {tmp_path / 'no-kubectl'}: No such file or directory "
        "(put kubectl on PATH or set $KUBECTL)\n"
    )


def test_a_real_port_forward_to_a_pod_that_is_not_running(
    kube: Any, kube_namespace: str, kube_control_plane: Any
) -> None:
    """The real kubectl, where tier 3 lets it fail for real: no kubelet runs the pod."""
    kubectl = real_kubectl()
    if kubectl is None:
        pytest.skip("no kubectl (make k8s-tools, or $KUBECTL)")
    create_cluster(kube, kube_namespace)
    secret(kube, kube_namespace, "kv-auth", TOKEN)
    labels = {"app.kubernetes.io/instance": "kv"}
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kv", "namespace": kube_namespace},
            "spec": {"selector": labels, "ports": [{"port": 8080, "targetPort": 8080}]},
        }
    )
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "kv-0", "namespace": kube_namespace, "labels": labels},
            "spec": {"containers": [{"name": "node", "image": "ringkv/node:test"}]},
        }
    )
    r = plugin(
        "connect",
        "kv",
        "-n",
        kube_namespace,
        "--kubeconfig",
        str(kube_control_plane.kubeconfig),
        KUBECTL=kubectl,
    )
    assert (r.returncode, r.stdout) == (3, ""), r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("kubectl-ringkv: kubectl port-forward exited (1): error: ")
    assert "not running" in r.stderr, r.stderr


def test_backup_creates_a_kvbackup_and_follows_it_to_the_end(
    kube: Any, kube_namespace: str, kube_control_plane: Any
) -> None:
    """The test plays the operator: it writes the KVBackup's status as the plugin follows."""
    ns, cfg = kube_namespace, str(kube_control_plane.kubeconfig)
    create_cluster(kube, ns, "plain")
    r = plugin("backup", "plain", "-n", ns, "--kubeconfig", cfg)
    assert r.returncode == 2, r.stderr
    assert "has no spec.backup.destination: give --pvc CLAIM or --s3" in r.stderr
    dest = {"pvc": {"claimName": "bk", "path": ""}}
    create_cluster(kube, ns, "kv", backup={"destination": dest})

    def run(name: str, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [PLUGIN, "backup", "kv", "--name", name, "-n", ns, "--kubeconfig", cfg, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
        )  # fmt: skip

    def kvb(name: str) -> dict[str, Any] | None:
        try:
            return dict(kube.request("GET", f"{BASE}/{ns}/kvbackups/{name}"))
        except Exception:
            return None

    def set_status(name: str, status: dict[str, Any]) -> None:
        kube.request(
            "PATCH", f"{BASE}/{ns}/kvbackups/{name}/status", {"status": status},
            content_type="application/merge-patch+json",
        )  # fmt: skip

    proc = run("kv-b1", "--verify", "restore")
    deadline = time.monotonic() + 30
    while kvb("kv-b1") is None and time.monotonic() < deadline:
        time.sleep(0.2)
    obj = kvb("kv-b1")
    assert obj is not None and obj["spec"] == {"cluster": "kv", "destination": dest,
                                                "verify": "restore"}  # fmt: skip
    set_status("kv-b1", {"phase": "Running", "message": "Job kv-b1 is running"})
    time.sleep(2.5)
    done = {"phase": "Completed", "keys": 1200, "sizeBytes": 4096, "location": "pvc://bk/kv-b1"}
    set_status("kv-b1", {**done, "verified": "restore drill passed"})
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == "kvbackup/kv-b1 created"
    assert any("Running" in line and "Job kv-b1 is running" in line for line in lines), out
    assert "Completed" in lines[-1] and "1,200 keys, 4.0 KiB, at pvc://bk/kv-b1" in lines[-1]
    assert "restore drill passed" in lines[-1]

    proc = run("kv-b2", "--s3", "s3://b/p", "--s3-secret", "creds")
    while kvb("kv-b2") is None and time.monotonic() < deadline + 30:
        time.sleep(0.2)
    obj = kvb("kv-b2")
    assert obj is not None
    s3 = obj["spec"]["destination"]["s3"]
    assert s3 == {"bucket": "b", "prefix": "p", "secretName": "creds",
                  "region": "us-east-1", "pathStyle": False}  # fmt: skip
    set_status("kv-b2", {"phase": "Failed", "message": "Job kv-b2 failed: no such bucket"})
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3 and "Failed" in out and "no such bucket" in out, (out, err)
    r = plugin("backup", "kv", "--name", "kv-b2", "-n", ns, "--kubeconfig", cfg)
    assert r.returncode == 2 and "already exists" in r.stderr, r.stderr
