"""ringkv: client, ring math and command line of the ringkv key-value store."""

from ringkv.keys import DEFAULT_LIMITS, InvalidKeyError, Limits, encode_key
from ringkv.versions import HLC, Version, parse_version

__version__ = "0.1.0.dev0"

__all__ = [
    "DEFAULT_LIMITS",
    "HLC",
    "InvalidKeyError",
    "Limits",
    "Version",
    "__version__",
    "encode_key",
    "parse_version",
]
