"""A KVCluster mid-rebalance: the status the operator writes, and the whole text
`kubectl ringkv status` shows for it.

Shared by the plugin's pure view (client/tests/test_kubectl_view.py, at a
fixed `NOW`) and the plugin against a real API server
(tests/cluster/test_kubectl_k8s.py, at the wall clock's now).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

NOW = dt.datetime(2025, 6, 1, 12, 0, 0, tzinfo=dt.UTC).timestamp()


def rebalancing_status(now: float = NOW) -> dict[str, Any]:
    """A status as the operator writes it while 4 pods scale up: kv-3 joins, its node down."""

    def at(seconds: float) -> str:
        return dt.datetime.fromtimestamp(now - seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    message = "ring epoch 2 -> 3: stream: kv-3 streams 48 partitions"
    return {
        "phase": "Rebalancing",
        "phaseSince": at(130),
        "message": message,
        "replicas": 4,
        "readyReplicas": 3,
        "selector": "app.kubernetes.io/instance=kv",
        "image": "ringkv/node:0.1.0",
        "observedGeneration": 2,
        "ringEpoch": 2,
        "members": 3,
        "rebalance": {
            "state": "Streaming",
            "fromEpoch": 2,
            "toEpoch": 3,
            "fromMembers": 3,
            "toMembers": 4,
            "partitionsMoved": 96,
            "partitionsTotal": 192,
            "startedAt": at(130),
        },
        "upgrade": {"revision": "kv-7d9f", "updated": 4, "partition": 4},
        "convergence": {"hintBacklog": 12, "partitionsOutOfSync": 1, "lastAntiEntropy": at(14)},
        "nodes": [
            {
                "pod": "kv-0",
                "ready": True,
                "zone": "eu-1a",
                "epoch": 2,
                "partitions": 256,
                "hintBacklog": 12,
                "partitionsOutOfSync": 1,
                "usedBytes": 1_572_864,
            },
            {
                "pod": "kv-1",
                "ready": True,
                "zone": "eu-1b",
                "epoch": 2,
                "partitions": 256,
                "hintBacklog": 0,
                "partitionsOutOfSync": 0,
                "usedBytes": 1_610_612_736,
            },
            {
                "pod": "kv-2",
                "ready": True,
                "zone": "eu-1c",
                "epoch": 2,
                "partitions": 256,
                "hintBacklog": 0,
                "partitionsOutOfSync": 0,
                "usedBytes": 900,
            },
            {"pod": "kv-3", "ready": False, "zone": "eu-1a", "unreachable": True},
        ],
        "conditions": [
            {
                "type": "Degraded",
                "status": "True",
                "reason": "PodsNotReady",
                "message": "kv-3 is not ready",
                "lastTransitionTime": at(100),
                "observedGeneration": 2,
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "Rebalancing",
                "message": message,
                "lastTransitionTime": at(130),
                "observedGeneration": 2,
            },
            {
                "type": "Ready",
                "status": "False",
                "reason": "Rebalancing",
                "message": message,
                "lastTransitionTime": at(130),
                "observedGeneration": 2,
            },
            {
                "type": "Rebalancing",
                "status": "True",
                "reason": "Streaming",
                "message": message,
                "lastTransitionTime": at(130),
                "observedGeneration": 2,
            },
        ],
    }


# The whole text, as people read it: every section of a cluster mid-rebalance.
REBALANCING = """\
Name:        kv
Namespace:   shop
Phase:       Rebalancing for 2m10s
Message:     ring epoch 2 -> 3: stream: kv-3 streams 48 partitions
Replicas:    3 of 4 ready (spec.replicas 4)
Ring:        epoch 2, 3 members, 256 partitions, N=3
Rebalance:   Streaming: epoch 2 -> 3, 3 -> 4 members, 96/192 partition copies streamed (50%), \
started 2m10s ago
Convergence: hint backlog 12, partitions out of sync 1, last anti-entropy 14s ago
Image:       ringkv/node:0.1.0
Last backup: none

Conditions:
  TYPE         STATUS  REASON        AGE    MESSAGE
  Degraded     True    PodsNotReady  100s   kv-3 is not ready
  Progressing  True    Rebalancing   2m10s  ring epoch 2 -> 3: stream: kv-3 streams 48 partitions
  Ready        False   Rebalancing   2m10s  ring epoch 2 -> 3: stream: kv-3 streams 48 partitions
  Rebalancing  True    Streaming     2m10s  ring epoch 2 -> 3: stream: kv-3 streams 48 partitions

Pods:
  POD   READY  ZONE   EPOCH  PARTITIONS  HINTS  OUT-OF-SYNC  USED     NOTE
  kv-0  yes    eu-1a  2      256         12     1            1.5 MiB
  kv-1  yes    eu-1b  2      256         0      0            1.5 GiB
  kv-2  yes    eu-1c  2      256         0      0            900 B
  kv-3  no     eu-1a  -      -           -      -            -        unreachable: its node did \
not answer
"""
