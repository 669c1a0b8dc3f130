"""The cluster: ring state, the coordinator, anti-entropy, membership change, the node.

Everything a node does with its peers, through the peer seam
(`peer.Transport`), never through a network library: no aiohttp here
(import-linter keeps it so), so all of it runs over the tests' fake network.
"""

from ringkv_node.cluster.antientropy import AntiEntropy
from ringkv_node.cluster.bulk import write_bulk
from ringkv_node.cluster.coordinator import Coordinator, NotEnoughReplicasError
from ringkv_node.cluster.membership import Membership
from ringkv_node.cluster.node import Node, ring_from_settings
from ringkv_node.cluster.peer import PeerError, Transport
from ringkv_node.cluster.ringstate import RingState
from ringkv_node.cluster.transitions import MembershipError, RingConflictError, StaleEpochError

__all__ = [
    "AntiEntropy",
    "Coordinator",
    "Membership",
    "MembershipError",
    "Node",
    "NotEnoughReplicasError",
    "PeerError",
    "RingConflictError",
    "RingState",
    "StaleEpochError",
    "Transport",
    "ring_from_settings",
    "write_bulk",
]
