"""ringkv-operator: reconciles KVCluster resources into running, rebalanced ringkv clusters.

Pure modules (`model`, `crds`, `builders`, `apply`, `plan`, `status`, `leader.decide`)
compute; `k8s`, `nodes`, `reconciler`, `handlers` and `__main__` do the I/O.
"""

__version__ = "0.1.0.dev0"
