"""Shared fixtures for ringkv's Kubernetes test tiers.

The kubeharness fixtures (e2e/kubeharness/plugin.py) are loaded for the whole
test session by pytest.ini (`pythonpath = e2e`, `-p kubeharness.plugin`), so
that e2e/tests and operator/tests share one control plane.
"""

from collections.abc import Callable

import pytest


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print a figure to the terminal (make e2e's output), also when the test passes."""

    def show(line: str) -> None:
        with capsys.disabled():
            print(f"\n    e2e: {line}", flush=True)

    return show
