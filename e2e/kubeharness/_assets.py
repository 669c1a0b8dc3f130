"""Where the tier-3 binaries come from.

Order, per binary:
1. ``KUBEBUILDER_ASSETS`` (the envtest convention: what ``setup-envtest``
   downloads on a machine with internet) when that directory holds it;
2. ``RINGKV_K8S_BIN`` (default ``~/.cache/ringkv/k8s-<version>/bin``), where
   ``make k8s-test-bins`` builds kube-apiserver and kube-controller-manager;
3. ``PATH`` (Debian's ``etcd-server`` package puts etcd in /usr/bin).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

_VERSIONS_ENV = Path(__file__).resolve().parent.parent / "cluster" / "versions.env"


class MissingBinaryError(FileNotFoundError):
    """A control-plane binary was not found; the message says how to get it."""


def pinned_versions(path: Path = _VERSIONS_ENV) -> dict[str, str]:
    """KEY=value pairs of e2e/cluster/versions.env."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def default_bin_dir() -> Path:
    cache = Path(os.environ.get("RINGKV_CACHE", Path.home() / ".cache" / "ringkv"))
    return cache / f"k8s-{pinned_versions()['K8S_VERSION']}" / "bin"


def search_dirs() -> list[Path]:
    dirs = []
    if assets := os.environ.get("KUBEBUILDER_ASSETS"):
        dirs.append(Path(assets))
    dirs.append(Path(os.environ.get("RINGKV_K8S_BIN", default_bin_dir())))
    return dirs


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path | None


def find_binary(name: str) -> Path | None:
    for d in search_dirs():
        p = d / name
        if p.is_file() and os.access(p, os.X_OK):
            return p
    found = shutil.which(name)
    return Path(found) if found else None


def find_binaries(*, controller_manager: bool = False) -> Binaries:
    """Locate etcd and kube-apiserver (and kube-controller-manager if asked)."""
    names = ["etcd", "kube-apiserver"] + (["kube-controller-manager"] if controller_manager else [])
    found = {n: find_binary(n) for n in names}
    missing = [n for n, p in found.items() if p is None]
    if missing:
        raise MissingBinaryError(
            f"missing {', '.join(missing)} "
            f"(searched {', '.join(map(str, search_dirs()))} and PATH); "
            "run `make k8s-test-bins` or set KUBEBUILDER_ASSETS"
        )
    return Binaries(
        etcd=found["etcd"],  # type: ignore[arg-type]
        kube_apiserver=found["kube-apiserver"],  # type: ignore[arg-type]
        kube_controller_manager=found.get("kube-controller-manager"),
    )
