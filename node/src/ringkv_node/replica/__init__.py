"""One replica: key-value semantics over storage, hinted handoff, what it answers peers.

`KV` applies records last-writer-wins with TTLs and tombstones; `Hints`
keeps the writes an owner missed; `peer_service` answers peers' calls
(whatever carries them); `paging` walks a partition a page at a time;
`snapshot` streams one partition for a backup. Nothing here knows the ring
or the network.
"""

from ringkv_node.replica.hints import Hints
from ringkv_node.replica.kv import KV, Applied
from ringkv_node.replica.paging import PAGE, local_pages, peer_pages
from ringkv_node.replica.peer_service import MAX_SCAN, PEER_CALLS, serve, serve_now
from ringkv_node.replica.snapshot import CONTENT_TYPE, FRAME_BYTES, frames, stream_partition

__all__ = [
    "CONTENT_TYPE",
    "FRAME_BYTES",
    "KV",
    "MAX_SCAN",
    "PAGE",
    "PEER_CALLS",
    "Applied",
    "Hints",
    "frames",
    "local_pages",
    "peer_pages",
    "serve",
    "serve_now",
    "stream_partition",
]
