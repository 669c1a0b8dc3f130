"""Tier 4 helpers: talk to the kind cluster made by ``make kind-up``.

The cluster is created (only if absent) and our images are loaded by
``e2e/cluster/kind-up.sh``; tests only use it. ``kubectl`` is the one built by
``make k8s-tools`` (``$KUBECTL`` overrides). Every call has a timeout, and
``diagnostics()`` gathers what a failed test should show: objects, events,
``describe`` and container logs.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._assets import default_bin_dir


def _cache() -> Path:
    return Path(os.environ.get("RINGKV_CACHE", Path.home() / ".cache" / "ringkv"))


def cluster_name() -> str:
    return os.environ.get("KIND_CLUSTER", "ringkv-e2e")


def kubeconfig_path() -> Path:
    return Path(
        os.environ.get("RINGKV_KIND_KUBECONFIG", _cache() / "kind" / f"{cluster_name()}.kubeconfig")
    )


@dataclass(frozen=True)
class Kubectl:
    kubeconfig: Path
    binary: str = os.environ.get("KUBECTL", str(default_bin_dir() / "kubectl"))

    def run(
        self, *args: str, timeout: float = 60, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary, f"--kubeconfig={self.kubeconfig}", *args]
        proc = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[2:])} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def apply(self, manifest: dict[str, Any] | list[dict[str, Any]], namespace: str) -> None:
        items = manifest if isinstance(manifest, list) else [manifest]
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        self.run("apply", "-n", namespace, "-f", "-", stdin=doc)

    def get_json(self, *args: str) -> Any:
        return json.loads(self.run("get", "-o", "json", *args).stdout)

    def exec(self, namespace: str, pod: str, *cmd: str, timeout: float = 60) -> str:
        return self.run("exec", "-n", namespace, pod, "--", *cmd, timeout=timeout).stdout

    def diagnostics(self, namespace: str) -> str:
        parts = []
        for args in (
            ("get", "nodes,pods,pvc,pv,svc,endpointslices,statefulsets", "-o", "wide", "-A"),
            ("get", "events", "-n", namespace, "--sort-by=.lastTimestamp"),
            ("describe", "pods", "-n", namespace),
            ("logs", "-n", namespace, "--all-containers", "--prefix", "--tail=50", "-l", "e2e=1"),
            ("get", "events", "-n", "kube-system", "--sort-by=.lastTimestamp"),
            ("logs", "-n", "local-path-storage", "deploy/local-path-provisioner", "--tail=30"),
        ):
            try:
                out = self.run(*args, timeout=30, check=False)
                parts.append(f"$ kubectl {' '.join(args)}\n{out.stdout}{out.stderr}")
            except subprocess.TimeoutExpired:
                parts.append(f"$ kubectl {' '.join(args)}\n(timed out)")
        return "\n".join(parts)
