"""Sizes and durations as people write them on a command line: `512Mi`, `10s`.

The node's flags and the CLI's (`ringkv local up --drop-delay`, which passes
it on to the nodes) read them with the same rules, so the CLI refuses what
a node would refuse before it starts one.
"""

from __future__ import annotations

import re

__all__ = ["parse_duration", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_size(text: str) -> int:
    """`"4Gi"`, `"512MiB"`, `"1g"` or plain bytes (powers of 1024)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (like 512Mi, 4Gi or a number of bytes)")
    unit = (m.group(2) or "").lower()[:1]
    return int(m.group(1)) * _SIZE_UNITS[unit]


def parse_duration(text: str) -> float:
    """`"24h"`, `"10s"`, `"500ms"` or plain seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (like 500ms, 10s, 5m, 24h)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2) or ""]
