"""Real `ringkv-node` processes on 127.0.0.1 for integration tests."""

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
from dataclasses import dataclass, field
from pathlib import Path

_GIVEN: set[int] = set()  # ports this process has handed out


def free_port() -> int:
    """A port free now and never handed out before by this process: two nodes
    made before either starts must not get the same one (the kernel may give
    a closed port again, and the second node's readiness check would then be
    answered by the first: a test once added "n3" at n2's URL)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
    raise RuntimeError("no port free that was not handed out already")


@dataclass
class NodeProcess:
    node_id: str
    data_dir: Path
    port: int = field(default_factory=free_port)
    extra: list[str] = field(default_factory=list)
    peers: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.node_id}.log"

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "ringkv_node",
            "--id",
            self.node_id,
            "--listen",
            f"127.0.0.1:{self.port}",
            "--advertise-url",
            self.url,
            "--data-dir",
            str(self.data_dir / self.node_id),
            "--sweep-interval",
            "200ms",
            *self.extra,
        ]
        if self.peers:
            cmd += ["--peers", self.peers]
        return cmd

    def start(self, wait: bool = True) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        self._check_identity()
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"node not ready after {timeout_s}s: {self.log()}")

    def _check_identity(self) -> None:
        """RuntimeError when another node answers at our port (ours then fails to bind)."""
        request = urllib.request.Request(self.url + "/v1/status", headers=AUTH)
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                answered = json.loads(resp.read()).get("node_id")
        except (OSError, urllib.error.URLError, ValueError):
            return  # not a status this node gives us (auth, say): readiness alone
        if answered != self.node_id:
            raise RuntimeError(f"{self.url} is node {answered!r}, not {self.node_id}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)


TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Cluster:
    """N real node processes on loopback forming one ring."""

    nodes: list[NodeProcess]

    @classmethod
    def create(cls, data_dir: Path, size: int = 3, extra: list[str] | None = None) -> Cluster:
        nodes = [NodeProcess(f"n{i}", data_dir) for i in range(size)]
        peers = ",".join(f"{n.node_id}={n.url}" for n in nodes)
        for n in nodes:
            n.peers = peers
            n.extra = [
                "--token",
                TOKEN,
                "--anti-entropy-interval",
                "1s",
                "--hint-interval",
                "200ms",
                "--replica-timeout",
                "1s",
                *(extra or []),
            ]
        return cls(nodes)

    def start(self) -> None:
        for n in self.nodes:
            n.start(wait=False)
        for n in self.nodes:
            n.wait_ready()

    def kill_all(self) -> None:
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    n.signal(signal.SIGCONT)
            n.kill()
