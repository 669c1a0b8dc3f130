"""The node's pure model: records, digests, quorum arithmetic, the internal wire format.

No I/O and no framework: every other layer builds on these, and they import
nothing of the node but each other (import-linter keeps it so).
"""

from ringkv_node.model import digests, quorum, records, wire
from ringkv_node.model.ops import BatchOp
from ringkv_node.model.pending import Pending, settle
from ringkv_node.model.records import Record, is_live

__all__ = [
    "BatchOp",
    "Pending",
    "Record",
    "digests",
    "is_live",
    "quorum",
    "records",
    "settle",
    "wire",
]
