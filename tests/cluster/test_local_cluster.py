"""`ringkv local up` / `add-node` / `remove-node` as a person runs them (README)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
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


CLI = [sys.executable, "-c", "from ringkv.cli import main; raise SystemExit(main())"]


def ringkv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=240)


def local_up(data: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    cmd = [*CLI, "local", "up", "--port", str(port), "--data-dir", str(data), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@dataclass
class Up:
    """A running `ringkv local up`: its process, directory, first port, and
    what it printed until it was up."""

    proc: subprocess.Popen[str]
    data: Path
    port: int
    lines: list[str]


@contextlib.contextmanager
def running(tmp_path: Path, nodes: int, *extra: str) -> Iterator[Up]:
    """`ringkv local up --nodes N` on free ports under tmp_path/kv; Ctrl-C after."""
    port = free_base_port(nodes + 1)
    data = tmp_path / "kv"
    up = local_up(data, port, "--nodes", str(nodes), *extra)
    try:
        yield Up(up, data, port, wait_until_up(up))
    finally:
        stop(up)


def stop(up: subprocess.Popen[str]) -> str:
    """SIGINT, as Ctrl-C; what it printed after it was up."""
    up.send_signal(signal.SIGINT)
    try:
        out, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    return out


def wait_until_up(up: subprocess.Popen[str]) -> list[str]:
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
    return lines


def test_local_cluster_as_the_readme_says(tmp_path: Path) -> None:
    port = free_base_port(5)
    data = tmp_path / "kv"
    up = local_up(data, port, "--nodes", "3", "--drop-delay", "1s")
    try:
        lines = wait_until_up(up)
        assert any("data routes are open" in line for line in lines)
        assert not any("RINGKV_TOKEN" in line for line in lines)  # no token is needed
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
        assert f"{data / 'node-3'} is left as it was" in removed.stdout
        steps = removed.stderr.splitlines()
        assert steps and all(": " in line for line in steps)
        assert not any("0/0" in line for line in steps), steps  # no empty counts
        assert any(line.startswith("join: giving") for line in steps), steps
        assert any(line.startswith("commit: ") for line in steps), steps
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


def node_pids(data: Path) -> dict[str, int]:
    """Each node's pid, from the lock file it holds on its directory."""
    return {
        d.name: int((d / "LOCK").read_text())
        for d in sorted(data.glob("node-*"))
        if (d / "LOCK").exists()
    }


def test_a_second_local_up_on_a_running_cluster_refuses_and_touches_nothing(
    tmp_path: Path,
) -> None:
    with running(tmp_path, 2, "--auth") as up:
        data, port = up.data, up.port
        assert any("auth is on" in line for line in up.lines)
        assert any(f"export RINGKV_TOKEN=$(cat {data / 'token'})" in line for line in up.lines)
        token = (data / "token").read_text().strip()
        pids = node_pids(data)
        assert len(pids) == 2
        for pid in pids.values():  # the token is never on a node's command line
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert token.encode() not in b" ".join(cmdline)
            assert b"--token-file" in cmdline
        manifest = (data / "cluster.json").read_bytes()

        again = ringkv("local", "up", "--port", str(port), "--data-dir", str(data))
        assert again.returncode == 2, again.stdout + again.stderr
        assert f"already running in {data}" in again.stderr
        assert f"pid {up.proc.pid}" in again.stderr
        # same ports, another directory: told what holds them
        other = ringkv(
            "local", "up", "--nodes", "2", "--port", str(port), "--data-dir", str(tmp_path / "b")
        )
        assert other.returncode == 2
        assert f"port {port} (node-0) is in use by a ringkv node (its status needs" in other.stderr
        assert not (tmp_path / "b" / "cluster.json").exists()
        assert node_pids(data) == pids and (data / "cluster.json").read_bytes() == manifest
        put = f"http://127.0.0.1:{port}/v1/kv/k"
        assert http("PUT", put, b"v")[0] == 401  # --auth: data routes need the token
        req = urllib.request.Request(put, b"v", {"Authorization": f"Bearer {token}"}, method="PUT")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 201


def test_local_up_refuses_a_directory_whose_node_is_still_running(tmp_path: Path) -> None:
    port = free_base_port(2)
    data = tmp_path / "kv"
    up = local_up(data, port, "--nodes", "1")
    try:
        wait_until_up(up)
        pids = node_pids(data)
        up.kill()  # SIGKILL: the node (its own process group) keeps running
        up.wait(10)
        again = ringkv("local", "up", "--port", str(port), "--data-dir", str(data))
        assert again.returncode == 2
        assert f"{data / 'node-0'} is in use by pid {pids['node-0']}" in again.stderr
        assert f"port {port} (node-0) is in use by a ringkv node" in again.stderr
        assert http("GET", f"http://127.0.0.1:{port}/readyz")[0] == 200  # untouched
    finally:
        if up.stdout is not None:
            up.stdout.close()
        for pid in node_pids(data).values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_remove_node_below_n_is_refused_before_anything_stops(tmp_path: Path) -> None:
    with running(tmp_path, 3) as up:
        pids = node_pids(up.data)
        manifest = (up.data / "cluster.json").read_bytes()
        removed = ringkv("local", "remove-node", "--data-dir", str(up.data), "--quiet")
        assert removed.returncode == 2, removed.stdout + removed.stderr
        message = removed.stderr
        assert "cannot remove node-2" in message
        assert "fewer than its replication factor N=3" in message
        assert "ringkv local add-node" in message and "--replication-factor 2" in message
        assert "decommissioned" not in removed.stdout
        assert (up.data / "cluster.json").read_bytes() == manifest
        time.sleep(1)  # the supervisor follows cluster.json every 0.2 s
        assert node_pids(up.data) == pids
        for pid in pids.values():
            os.kill(pid, 0)  # still running
        ring = json.loads(http("GET", f"http://127.0.0.1:{up.port}/v1/ring")[1])
        assert (ring["epoch"], len(ring["members"])) == (1, 3)
        url = f"http://127.0.0.1:{up.port}/v1/kv/k?consistency=all"
        assert http("PUT", url, b"v")[0] == 201  # every replica still answers


def test_a_crashing_node_is_named_with_its_log_at_the_first_failure(tmp_path: Path) -> None:
    with running(tmp_path, 2) as up:
        os.kill(node_pids(up.data)["node-1"], signal.SIGKILL)
        assert up.proc.stdout is not None
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline and "restart #1" not in line:
            line = up.proc.stdout.readline()
        assert f"node-1 exited with -9 (log: {up.data / 'node-1' / 'node.log'}" in line, line
