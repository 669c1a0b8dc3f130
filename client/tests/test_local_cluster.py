"""`ringkv local up` / `add-node` / `remove-node` as a person runs them (README)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]


def free_base_port(count: int) -> int:
    """A port P such that P .. P+count-1 are free on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + count >= 65000:
            continue
        try:
            socks = []
            for p in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports")


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def ringkv(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from ringkv.cli import main; raise SystemExit(main())", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240)


def wait_until_up(up: subprocess.Popen[str]) -> None:
    """Read `ringkv local up`'s output until it says the cluster is up (60 s at most)."""
    assert up.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = up.stdout.readline()
        lines.append(line)
        if "Ctrl-C stops the nodes" in line or not line:
            break
    if "Ctrl-C stops the nodes" not in lines[-1]:
        pytest.fail("local up did not come up: " + "".join(lines))


def test_local_cluster_as_the_readme_says(tmp_path: Path) -> None:
    port = free_base_port(5)
    data = tmp_path / "kv"
    cmd = [sys.executable, "-c", "from ringkv.cli import main; raise SystemExit(main())"]
    cmd += ["local", "up", "--nodes", "3", "--port", str(port), "--data-dir", str(data)]
    cmd += ["--drop-delay", "1s"]
    up = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_up(up)
        base = f"http://127.0.0.1:{port}"
        # the README's curl lines, no token needed on data routes
        assert http("PUT", f"{base}/v1/kv/k", b"v") == (201, b"")
        assert http("GET", f"http://127.0.0.1:{port + 1}/v1/kv/k") == (200, b"v")
        assert http("PUT", f"http://127.0.0.1:{port + 2}/v1/kv/k", b"w") == (200, b"v")
        # node-to-node routes still need the token
        assert http("POST", f"{base}/internal/v1/ping", b"")[0] == 401
        for i in range(200):
            assert http("PUT", f"{base}/v1/kv/key{i}", b"%d" % i)[0] == 201

        added = ringkv("local", "add-node", "--data-dir", str(data), "--quiet")
        assert added.returncode == 0, added.stderr
        assert "node-3 joined" in added.stdout
        status, body = http("GET", f"http://127.0.0.1:{port + 3}/v1/status")
        assert status == 200
        assert json.loads(body)["partitions_owned"] > 0

        removed = ringkv("local", "remove-node", "--data-dir", str(data), "--quiet")
        assert removed.returncode == 0, removed.stderr
        assert "node-3 decommissioned" in removed.stdout
        manifest = json.loads((data / "cluster.json").read_text())
        assert [n.get("state", "active") for n in manifest["nodes"]] == [
            "active", "active", "active", "removed",
        ]  # fmt: skip
        for i in range(200):
            assert http("GET", f"{base}/v1/kv/key{i}") == (200, b"%d" % i)
        assert http("GET", f"{base}/v1/kv/k") == (200, b"w")
    finally:
        up.send_signal(signal.SIGINT)
        try:
            code = up.wait(60)
        finally:
            if up.poll() is None:
                up.kill()
            if up.stdout is not None:
                up.stdout.close()
    assert code == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_ctrl_c_in_a_terminal_stops_every_node_without_restarting_one(tmp_path: Path) -> None:
    """A terminal sends SIGINT to the whole foreground process group."""
    port = free_base_port(3)
    cmd = [sys.executable, "-c", "from ringkv.cli import main; raise SystemExit(main())"]
    cmd += ["local", "up", "--nodes", "3", "--port", str(port), "--data-dir", str(tmp_path)]
    up = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        wait_until_up(up)
        os.killpg(up.pid, signal.SIGINT)
        out, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, out
    assert "restart" not in out and "stopping nodes..." in out
    for i in range(3):
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port + i}/healthz", timeout=2)
