"""Test harness for ringkv against real Kubernetes.

Tier 3: :class:`ControlPlane` runs etcd + kube-apiserver (+ optional
kube-controller-manager) on loopback; :mod:`kubeharness.plugin` exposes it as
pytest fixtures. ``python -m kubeharness up|down`` does the same for people.
"""

from ._assets import Binaries, MissingBinaryError, find_binaries, pinned_versions
from ._controlplane import ControlPlane, ControlPlaneError, free_port

__all__ = [
    "Binaries",
    "ControlPlane",
    "ControlPlaneError",
    "MissingBinaryError",
    "find_binaries",
    "free_port",
    "pinned_versions",
]
