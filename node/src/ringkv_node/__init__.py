"""ringkv-node: the ringkv storage node (aiohttp over LMDB)."""

__version__ = "0.1.0.dev0"
