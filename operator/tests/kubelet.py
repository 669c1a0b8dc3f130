"""A stand-in kubelet for the tier-3 API server: real processes for real pods.

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

The pods of Jobs (backups, restores, prunes: their `app.kubernetes.io/component`
is not `storage`) run their `ringkv` command once, as a real CLI process with
the pod's environment, their claims mapped onto the same directories, the
client Service's URL onto the cluster's loopback nodes, and
/dev/termination-log onto a file; when it exits the pod is reported
Succeeded or Failed with that file (or, on a failure, the log's tail) as the
termination message, which is what the Job controller and the operator read.

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
    started: str = ""


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
    job_runs: list[tuple[str, int]] = field(default_factory=list)  # (pod, exit code)

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
            if _component(pod) != "storage":
                self._sync_job_pod(pod)
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

    # -- one Job pod ---------------------------------------------------------------

    def _sync_job_pod(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        run = self.running.get(name)
        if run is None:
            self._start_job_pod(pod)
            return
        code = run.proc.poll()
        if code is None:
            return
        term = self.root / f"{name}.term"
        message = term.read_text() if term.exists() else ""
        if code != 0 and not message:  # terminationMessagePolicy: FallbackToLogsOnError
            message = (self.root / f"{name}.log").read_text(errors="replace")[-2048:]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
            "containerStatuses": [
                {
                    "name": pod["spec"]["containers"][0]["name"],
                    "ready": False,
                    "restartCount": 0,
                    "image": pod["spec"]["containers"][0]["image"],
                    "imageID": "",
                    "started": False,
                    "state": {
                        "terminated": {
                            "exitCode": code,
                            "reason": "Completed" if code == 0 else "Error",
                            "message": message[-4096:],
                            "startedAt": run.started,
                            "finishedAt": now,
                        }
                    },
                }
            ],
        }
        self.kube.patch("Pod", self.namespace, name, {"status": status}, sub="status")
        self.running.pop(name, None)
        self.job_runs.append((name, code))

    def _start_job_pod(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        env = self._env(pod)
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["spec"].get("volumes") or []
            if "persistentVolumeClaim" in v
        }
        mounts = {
            m["mountPath"]: self.root / f"pvc-{claims[m['name']]}"
            for m in container.get("volumeMounts") or []
            if m["name"] in claims
        }
        for path in mounts.values():
            path.mkdir(parents=True, exist_ok=True)
        args = []
        for arg in container.get("args") or []:
            if arg == "/dev/termination-log":
                arg = str(self.root / f"{name}.term")
            for mount, local in mounts.items():
                if arg == mount or arg.startswith(mount + "/"):
                    arg = str(local) + arg[len(mount) :]
            args.append(arg)
        instance = (pod["metadata"].get("labels") or {}).get("app.kubernetes.io/instance", "")
        nodes = sorted(p for p in self.ports if p.rsplit("-", 1)[0] == instance)
        if env.get("RINGKV_URL"):  # the client Service: any of the cluster's nodes
            env["RINGKV_URL"] = ",".join(self.url(p) for p in nodes) or env["RINGKV_URL"]
        tmp = self.root / f"tmp-{name}"
        tmp.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp)
        child = {k: v for k, v in os.environ.items() if not k.startswith(("RINGKV_", "AWS_"))}
        child.update(env)
        ringkv = str(Path(sys.executable).with_name("ringkv"))
        assert container["command"] == ["ringkv"], container["command"]
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [ringkv, *args], env=child, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.running[name] = Running(pod["metadata"]["uid"], proc, started=now)
        status = {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": container["name"],
                    "ready": True,
                    "restartCount": 0,
                    "image": container["image"],
                    "imageID": "",
                    "started": True,
                    "state": {"running": {"startedAt": now}},
                }
            ],
        }
        with contextlib.suppress(ApiException):
            self.kube.patch("Pod", self.namespace, name, {"status": status}, sub="status")

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


def _component(pod: dict[str, Any]) -> str:
    return str((pod["metadata"].get("labels") or {}).get("app.kubernetes.io/component", ""))


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
