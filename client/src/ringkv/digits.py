"""Whole numbers in text: the one test before `int()` on what comes from outside.

`str.isdigit()` alone is not that test: it also takes characters such as
'²' or '①', which `int()` refuses with a ValueError (a query string, a
header decoded as Latin-1, or a flag can carry them), and `int()` refuses
more than 4,300 digits. `int()` itself takes non-ASCII decimal digits that
no protocol or flag of ours means.
"""

from __future__ import annotations

__all__ = ["MAX_DIGITS", "is_digits"]

MAX_DIGITS = 20  # 2**64 - 1 has 20: no number of ours is longer


def is_digits(text: str) -> bool:
    """`text` is 1 to `MAX_DIGITS` ASCII digits 0-9, so `int(text)` cannot fail."""
    return len(text) <= MAX_DIGITS and text.isascii() and text.isdigit()
