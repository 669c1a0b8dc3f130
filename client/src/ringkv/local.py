"""`ringkv local up`: a cluster of node processes on this machine, supervised.

Starts `ringkv-node` processes on consecutive loopback ports with their data
under one directory, waits until each answers /readyz, prints the URLs, and
restarts a node that dies. Ctrl-C (or SIGTERM) stops them all cleanly; the
data stays for the next `up`. No Kubernetes involved.

The supervisor holds `DATA_DIR/LOCK` while it runs (`ringkv.dirlock`) and,
before it starts anything, checks that no node process is left on a node's
directory and that every port is free (`preflight`): a second `up` on the
same directory would otherwise start a second node on each node's data.
The cluster token reaches the nodes as a file (`--token-file`), never on
their command line, where `ps` shows it to every local user.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from ringkv import dirlock

__all__ = ["LocalCluster", "LocalNode", "plan_nodes", "port_user", "preflight"]


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


def token_path(data_dir: str) -> str:
    return os.path.join(data_dir, "token")


def cluster_token(data_dir: str, given: str | None) -> str:
    """The cluster token kept in DATA_DIR/token (mode 0600): `given` (then kept
    there, for the nodes and for add-node/remove-node), else the one kept,
    else a new one."""
    path = token_path(data_dir)
    kept = None
    try:
        with open(path) as f:
            kept = f.read().strip() or None
    except FileNotFoundError:
        pass
    token = given or kept or secrets.token_urlsafe(24)
    if token != kept:
        os.makedirs(data_dir, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    return token


def port_user(host: str, port: int) -> str | None:
    """None when `port` is free on `host`; else what holds it, in words."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the node's listener
        try:
            s.bind((host, port))
            return None
        except OSError:
            pass
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/v1/status", timeout=2) as resp:
            doc = json.loads(resp.read())
        return f"a ringkv node ({doc['node_id']}, ring epoch {doc['epoch']})"
    except urllib.error.HTTPError as exc:  # a ringkv error is JSON with an "error" code
        with contextlib.suppress(ValueError, AttributeError):
            if "error" in json.loads(exc.read()):
                return "a ringkv node (its status needs the token)"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return "another program"


def preflight(data_dir: str, nodes: list[LocalNode]) -> list[str]:
    """Why the cluster in `data_dir` cannot start now, in words (none: it can).

    A node process still running on a node's directory (left by a supervisor
    that was killed: nodes run in their own process group), or a port in use.
    """
    problems = []
    for node in nodes:
        pid = dirlock.holder(node.data_dir)
        if pid is not None:
            problems.append(
                f"{node.id}'s directory {node.data_dir} is in use by pid {pid or '?'} "
                "(a ringkv-node left running?); stop it first"
            )
        user = port_user(node.host, node.port)
        if user is not None:
            problems.append(f"port {node.port} ({node.id}) is in use by {user}")
    return problems


def last_line(path: str) -> str:
    """The last non-empty line of a log ('' when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def wait_ready(url: str, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> bool:
    """True once `url` answers /readyz; False after `timeout_s` or once not `alive`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
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


def _running(proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: proc.poll() is None


@dataclass
class LocalCluster:
    """Runs the nodes listed in DATA_DIR/cluster.json and follows its changes.

    `add-node` and `remove-node` edit that file (and drive the rebalance);
    this supervisor starts the nodes that appear and stops the ones removed.
    """

    data_dir: str
    host: str
    extra_args: list[str] = field(default_factory=list)
    auth: bool = False  # data routes need the token too
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    max_restarts: int = 5

    def nodes(self) -> list[LocalNode]:
        return active(load_manifest(self.data_dir) or [], self.host, self.data_dir)

    def log_path(self, node: LocalNode) -> str:
        return os.path.join(node.data_dir, "node.log")

    def _exited(self, node: LocalNode, code: int | None) -> str:
        """`node-0 exited with 1 (log: PATH: its last line)`."""
        path = self.log_path(node)
        line = last_line(path)
        return f"{node.id} exited with {code} (log: {path}{': ' + line if line else ''})"

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
                proc = self.procs[node.id]
                if not wait_ready(node.url, ready_timeout_s, _running(proc)):
                    if proc.poll() is not None:
                        print(f"ringkv: {self._exited(node, proc.returncode)}", file=sys.stderr)
                    else:
                        print(
                            f"ringkv: {node.id} was not ready after {ready_timeout_s:.0f} s; "
                            f"see {self.log_path(node)}",
                            file=sys.stderr,
                        )
                    return 1
            print(f"ringkv local cluster up: {len(nodes)} nodes", flush=True)
            for node in nodes:
                print(f"  {node.id}  {node.url}  data: {node.data_dir}", flush=True)
            token = token_path(self.data_dir)
            if self.auth:
                print(f"auth is on: every request needs the cluster token in {token}:")
                print(f"  export RINGKV_TOKEN=$(cat {token})")
            else:
                print(
                    "data routes are open: no token needed (`ringkv local up --auth` requires it)"
                )
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
            exited = self._exited(nodes[node_id], proc.returncode)
            if n > self.max_restarts:
                print(f"ringkv: {exited}; it keeps failing: giving up", file=sys.stderr)
                return False
            print(f"ringkv: {exited}; restart #{n}", file=sys.stderr)
            time.sleep(min(5.0, 0.2 * 2**n))
            self.start(nodes[node_id], list(nodes.values()))
        return True
