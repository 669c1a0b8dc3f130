"""Shared fixtures for ringkv's Kubernetes test tiers (e2e/tests).

Puts e2e/ on sys.path (whatever pytest's import mode) and loads the
kubeharness fixtures: see e2e/kubeharness/plugin.py.
"""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from kubeharness.plugin import *  # noqa: E402,F403  (fixtures and hooks)
from kubeharness.plugin import pytest_configure, pytest_runtest_makereport  # noqa: E402,F401
