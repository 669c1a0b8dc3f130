"""A stand-in kubelet for the tier-3 API server: real node processes for real pods.

The tier-3 control plane (kube-apiserver + kube-controller-manager) has no
nodes, so the StatefulSet controller's pods stay Pending. `Kubelet` plays the
part for one namespace: for each pod of a StatefulSet it starts a real
`ringkv-node` on 127.0.0.1 with the environment the pod spec carries
(`valueFrom` Secrets and field references resolved), rewriting only what a
loopback port needs (listen address, advertise URL, the seeds' URLs, the data
directory, which belongs to the pod's PVC and outlives the pod). It reports
the pod Running and Ready while the node's `/readyz` answers 200, stops the
node (SIGTERM) when its pod goes, and deletes a PVC's directory when the PVC
goes. It writes the pod -> URL map the operator's `--resolver map:FILE` reads.

Pods are never bound to a node, so the API server deletes them at once:
what a graceful kubelet would do in `terminationGracePeriodSeconds`, this
one does after the pod is gone.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeharness import free_port

from ringkv_operator.k8s import ApiException, Kube


@dataclass
class Running:
    uid: str
    proc: subprocess.Popen[bytes]
    ready: bool = False


@dataclass
class Kubelet:
    kube: Kube
    namespace: str
    root: Path
    interval_s: float = 0.2
    ports: dict[str, int] = field(default_factory=dict)
    running: dict[str, Running] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def map_path(self) -> Path:
        return self.root / "urls.json"

    def url(self, pod: str) -> str:
        if pod not in self.ports:
            self.ports[pod] = free_port()
            self._write_map()
        return f"http://127.0.0.1:{self.ports[pod]}"

    def _write_map(self) -> None:
        doc = {
            f"{self.namespace}/{p}": f"http://127.0.0.1:{port}" for p, port in self.ports.items()
        }
        tmp = self.map_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.map_path)

    # -- the loop ----------------------------------------------------------------

    def start(self) -> Kubelet:
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_map()
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for name in list(self.running):
            self._kill(name)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync()
            except Exception as exc:  # reported by the test's teardown
                self.errors.append(repr(exc))

    def sync(self) -> None:
        pods = {
            p["metadata"]["name"]: p
            for p in self.kube.list("Pod", self.namespace, {"app.kubernetes.io/name": "ringkv"})
        }
        for name in list(self.running):
            pod = pods.get(name)
            if pod is None or pod["metadata"]["uid"] != self.running[name].uid:
                self._kill(name, graceful=True)
        for name, pod in pods.items():
            if pod["metadata"].get("deletionTimestamp"):
                continue
            run = self.running.get(name)
            if run is None:
                self._start(pod)
                continue
            alive = run.proc.poll() is None
            if not alive:
                self._start(pod)  # restartPolicy: Always
                continue
            ready = _ready(self.url(name))
            if ready != run.ready:
                self._report(pod, ready)
                run.ready = ready
        claims = {
            c["metadata"]["name"] for c in self.kube.list("PersistentVolumeClaim", self.namespace)
        }
        for path in self.root.glob("pvc-*"):
            if path.is_dir() and path.name[4:] not in claims:
                _rmtree(path)

    # -- one pod -----------------------------------------------------------------

    def _env(self, pod: dict[str, Any]) -> dict[str, str]:
        container = pod["spec"]["containers"][0]
        env: dict[str, str] = {}
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = _expand(item["value"], env)
                continue
            source = item.get("valueFrom") or {}
            if "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                env[item["name"]] = {"metadata.name": pod["metadata"]["name"]}.get(path, "")
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = self.kube.read("Secret", self.namespace, ref["name"]) or {}
                data = (secret.get("data") or {}).get(ref["key"], "")
                env[item["name"]] = base64.b64decode(data).decode()
        return env

    def _start(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        env = self._env(pod)
        claim = f"data-{name}"  # the StatefulSet's claim template is "data"
        data = self.root / f"pvc-{claim}"
        data.mkdir(parents=True, exist_ok=True)
        peers = []
        for item in env.get("RINGKV_PEERS", "").split(","):
            if item:
                ident = item.split("=", 1)[0]
                peers.append(f"{ident}={self.url(ident.split('@', 1)[0])}")
        port = self.url(name).rsplit(":", 1)[1]
        env.update(
            RINGKV_LISTEN=f"127.0.0.1:{port}",
            RINGKV_ADVERTISE_URL=self.url(name),
            RINGKV_PEERS=",".join(peers),
            RINGKV_DATA_DIR=str(data),
        )
        child = {k: v for k, v in os.environ.items() if not k.startswith("RINGKV_")}
        child.update(env)
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "ringkv_node"],
            env=child,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self.running[name] = Running(pod["metadata"]["uid"], proc)
        self.starts[name] = self.starts.get(name, 0) + 1
        self._report(pod, False)

    def _report(self, pod: dict[str, Any], ready: bool) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        flag = "True" if ready else "False"
        status = {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": flag, "lastTransitionTime": now},
                {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {
                    "name": "node",
                    "ready": ready,
                    "restartCount": self.starts.get(pod["metadata"]["name"], 1) - 1,
                    "image": pod["spec"]["containers"][0]["image"],
                    "imageID": "",
                    "started": True,
                    "state": {"running": {"startedAt": now}},
                }
            ],
        }
        with contextlib.suppress(ApiException):  # the pod may be gone already
            self.kube.patch(
                "Pod", self.namespace, pod["metadata"]["name"], {"status": status}, sub="status"
            )

    def _kill(self, name: str, graceful: bool = False) -> None:
        run = self.running.pop(name, None)
        if run is None or run.proc.poll() is not None:
            return
        run.proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            run.proc.wait(30)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            run.proc.wait()

    def kill(self, pod: str) -> None:
        """SIGKILL a pod's node, as a crash would (the loop starts it again)."""
        run = self.running.get(pod)
        if run is not None and run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()

    def logs(self) -> str:
        out = []
        for path in sorted(self.root.glob("*.log")):
            out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(out)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _expand(value: str, env: dict[str, str]) -> str:
    for key, val in env.items():
        value = value.replace(f"$({key})", val)
    return value


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
