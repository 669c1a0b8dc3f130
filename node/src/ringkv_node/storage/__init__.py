"""Storage: one LMDB environment, its write-ahead log and checkpoints. The only `lmdb` importer.

`engine` is the `Storage` the replica layer uses (group-committed writes,
short direct reads); `txn` is what a write operation may do inside the shared
transaction; `layout` draws the keys of every sub-database; `wal`,
`checkpoint` and `checkpointer` make unsynced LMDB commits durable and
recoverable; `groupcommit` batches writes and fsyncs; `errors` are its
failures.
"""

from ringkv_node.storage.engine import BACKLOG_LIMIT, SnapshotRows, Storage, StorageStats
from ringkv_node.storage.errors import (
    KeyTooLongError,
    OpRefusedError,
    StorageError,
    StorageFullError,
)
from ringkv_node.storage.groupcommit import ClosedError
from ringkv_node.storage.txn import WriteTxn

__all__ = [
    "BACKLOG_LIMIT",
    "ClosedError",
    "KeyTooLongError",
    "OpRefusedError",
    "SnapshotRows",
    "Storage",
    "StorageError",
    "StorageFullError",
    "StorageStats",
    "WriteTxn",
]
