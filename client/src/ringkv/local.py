"""`ringkv local up`: a cluster of node processes on this machine, supervised.

Starts `ringkv-node` processes on consecutive loopback ports with their data
under one directory, waits until each answers /readyz, prints the URLs, and
restarts a node that dies. Ctrl-C (or SIGTERM) stops them all cleanly; the
data stays for the next `up`. No Kubernetes involved.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

__all__ = ["LocalCluster", "LocalNode", "plan_nodes"]


@dataclass(frozen=True, slots=True)
class LocalNode:
    id: str
    host: str
    port: int
    data_dir: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def plan_nodes(count: int, host: str, port: int, data_dir: str) -> list[LocalNode]:
    if count < 1:
        raise ValueError("--nodes must be at least 1")
    return [
        LocalNode(f"node-{i}", host, port + i, os.path.join(data_dir, f"node-{i}"))
        for i in range(count)
    ]


def node_command(node: LocalNode, peers: list[LocalNode], extra: list[str]) -> list[str]:
    peer_arg = ",".join(f"{p.id}={p.url}" for p in peers)
    return [
        sys.executable,
        "-m",
        "ringkv_node",
        "--id",
        node.id,
        "--listen",
        f"{node.host}:{node.port}",
        "--advertise-url",
        node.url,
        "--data-dir",
        node.data_dir,
        "--peers",
        peer_arg,
        *extra,
    ]


def cluster_token(data_dir: str, given: str | None) -> str:
    """The cluster token: given, else the one kept in DATA_DIR/token, else a new one."""
    path = os.path.join(data_dir, "token")
    if given:
        return given
    try:
        with open(path) as f:
            token = f.read().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    os.makedirs(data_dir, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def wait_ready(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    return False


def _manifest_path(data_dir: str) -> str:
    return os.path.join(data_dir, "cluster.json")


def load_manifest(data_dir: str) -> list[dict[str, Any]] | None:
    """The nodes of the local cluster in DATA_DIR (written by `up`), or None."""
    try:
        with open(_manifest_path(data_dir)) as f:
            nodes: list[dict[str, Any]] = json.load(f)["nodes"]
            return nodes
    except FileNotFoundError:
        return None


def save_manifest(data_dir: str, nodes: list[dict[str, Any]]) -> None:
    os.makedirs(data_dir, exist_ok=True)
    tmp = _manifest_path(data_dir) + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"nodes": nodes}, f, indent=1)
    os.replace(tmp, _manifest_path(data_dir))


def active(nodes: list[dict[str, Any]], host: str, data_dir: str) -> list[LocalNode]:
    return [
        LocalNode(n["id"], host, n["port"], os.path.join(data_dir, n["id"]))
        for n in nodes
        if n.get("state", "active") in ("active", "joining")
    ]


@dataclass
class LocalCluster:
    """Runs the nodes listed in DATA_DIR/cluster.json and follows its changes.

    `add-node` and `remove-node` edit that file (and drive the rebalance);
    this supervisor starts the nodes that appear and stops the ones removed.
    """

    data_dir: str
    host: str
    extra_args: list[str] = field(default_factory=list)
    token_path: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    max_restarts: int = 5

    def nodes(self) -> list[LocalNode]:
        return active(load_manifest(self.data_dir) or [], self.host, self.data_dir)

    def start(self, node: LocalNode, peers: list[LocalNode]) -> None:
        os.makedirs(node.data_dir, exist_ok=True)
        log = open(os.path.join(node.data_dir, "node.log"), "ab")  # noqa: SIM115
        self.procs[node.id] = subprocess.Popen(
            node_command(node, peers, self.extra_args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own process group: a terminal's Ctrl-C reaches the supervisor
            # only, which stops the nodes itself (else they exit with it and
            # get restarted before it notices it is stopping).
            process_group=0,
        )
        log.close()

    def stop_one(self, node_id: str, timeout_s: float = 15.0) -> None:
        proc = self.procs.pop(node_id, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self, timeout_s: float = 15.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def up(self, *, ready_timeout_s: float = 30.0) -> int:
        """Start every node, print their URLs, supervise until interrupted."""
        stopping = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stopping.set()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            nodes = self.nodes()
            for node in nodes:
                self.start(node, nodes)
            for node in nodes:
                if not wait_ready(node.url, ready_timeout_s):
                    log_path = os.path.join(node.data_dir, "node.log")
                    print(
                        f"ringkv: {node.id} did not become ready; see {log_path}", file=sys.stderr
                    )
                    return 1
            print(f"ringkv local cluster up: {len(nodes)} nodes", flush=True)
            for node in nodes:
                print(f"  {node.id}  {node.url}  data: {node.data_dir}", flush=True)
            print(f"token: {self.token_path}  (export RINGKV_TOKEN=$(cat {self.token_path}))")
            print("Ctrl-C stops the nodes; data stays.", flush=True)
            while not stopping.wait(0.2):  # checked again after each nap
                self._follow_manifest()
                if not self._restart_dead():
                    return 1
            return 0
        finally:
            print("stopping nodes...", flush=True)
            self.stop()
            for s, handler in old.items():
                signal.signal(s, handler)

    def _follow_manifest(self) -> None:
        nodes = self.nodes()
        wanted = {n.id for n in nodes}
        for node in nodes:
            if node.id not in self.procs:
                print(f"ringkv: starting {node.id} at {node.url}", flush=True)
                self.start(node, nodes)
        for node_id in list(self.procs):
            if node_id not in wanted:
                print(f"ringkv: stopping removed {node_id}", flush=True)
                self.stop_one(node_id)

    def _restart_dead(self) -> bool:
        nodes = {n.id: n for n in self.nodes()}
        for node_id, proc in list(self.procs.items()):
            if proc.poll() is None or node_id not in nodes:
                continue
            n = self.restarts.get(node_id, 0) + 1
            self.restarts[node_id] = n
            if n > self.max_restarts:
                log_path = os.path.join(nodes[node_id].data_dir, "node.log")
                print(
                    f"ringkv: {node_id} keeps failing; giving up (see {log_path})", file=sys.stderr
                )
                return False
            print(f"ringkv: {node_id} exited with {proc.returncode}; restart #{n}", file=sys.stderr)
            time.sleep(min(5.0, 0.2 * 2**n))
            self.start(nodes[node_id], list(nodes.values()))
        return True
