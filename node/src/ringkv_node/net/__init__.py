"""The network side of the peer seam: peer links, request coalescing, the HTTP transport.

`HttpTransport` implements `ringkv_node.cluster.peer.Transport`; `peerlink`
is the long-lived link both ends speak (the caller's `Channel`, the
replica's `PeerServer`); `batcher` coalesces small calls to one peer.
"""

from ringkv_node.net.peerlink import PATH, UPGRADE, PeerServer, upgrade_answer
from ringkv_node.net.transport import HttpTransport

__all__ = ["PATH", "UPGRADE", "HttpTransport", "PeerServer", "upgrade_answer"]
