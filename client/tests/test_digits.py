"""`is_digits`: the test before `int()` on text from outside."""

from __future__ import annotations

import pytest

from ringkv.digits import is_digits
from ringkv.versions import parse_version


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", True),
        ("8080", True),
        ("", False),
        (" 1", False),
        ("-1", False),
        ("1.5", False),
        ("\u00b2", False),  # isdigit() takes it; int() refuses it
        ("\u2460", False),  # circled one: the same
        ("\u0661\u0662", False),  # Arabic-Indic 12: int() takes it; we do not
        ("9" * 20, True),
        ("9" * 21, False),
        ("9" * 5000, False),  # int() refuses more than 4300 digits
    ],
)
def test_is_digits(text: str, expected: bool) -> None:
    assert is_digits(text) is expected
    if expected:
        int(text)


def test_a_version_with_a_superscript_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="is not of the form <timestamp>@<member id>"):
        parse_version("\u00b2@n1")
