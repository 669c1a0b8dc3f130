"""Rendering the chart with the pinned helm (``make helm``), for tests of every tier.

``render()`` is ``helm template`` parsed into objects; ``require()`` skips a test
when helm is missing, or fails it under ``RINGKV_REQUIRE_K8S=1`` / ``CI``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ringkv"


def binary() -> Path:
    cache = Path(os.environ.get("RINGKV_CACHE", Path.home() / ".cache" / "ringkv"))
    return Path(os.environ.get("HELM", cache / "bin" / "helm"))


def kube_version() -> str:
    text = (ROOT / "e2e" / "cluster" / "versions.env").read_text()
    match = re.search(r"^K8S_VERSION=v(\S+)", text, re.M)
    assert match is not None
    return match[1]


def require() -> Path:
    import pytest

    path = binary()
    if not path.exists():
        msg = f"no helm at {path}: run `make helm`"
        if os.environ.get("RINGKV_REQUIRE_K8S") == "1" or os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return path


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(require()), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def render(*extra: str, release: str = "rk", namespace: str = "ringkv-system") -> list[Any]:
    out = run(
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        kube_version(),
        *extra,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]
