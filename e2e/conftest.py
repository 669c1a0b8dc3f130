"""Shared fixtures for ringkv's Kubernetes test tiers.

The kubeharness fixtures (e2e/kubeharness/plugin.py) are loaded for the whole
test session by pytest.ini (`pythonpath = e2e`, `-p kubeharness.plugin`), so
that e2e/tests and operator/tests share one control plane.
"""
