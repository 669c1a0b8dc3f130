"""Whole numbers in text: the one test before `int()` on what comes from outside.

`str.isdigit()` alone is not that test: it also takes characters such as
'²' or '①', which `int()` refuses with a ValueError (a query string, a
header decoded as Latin-1, or a flag can carry them). `int()` itself takes
non-ASCII decimal digits that no protocol or flag of ours means.
"""

from __future__ import annotations

__all__ = ["is_digits"]


def is_digits(text: str) -> bool:
    """`text` is one or more ASCII digits 0-9, so `int(text)` cannot fail."""
    return text.isascii() and text.isdigit()
