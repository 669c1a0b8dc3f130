"""Where the cluster token comes from (`ringkv.tokensource`), and the CLI's use of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringkv.cli import build_parser
from ringkv.cli.common import token
from ringkv.tokensource import token_source

FILES = {"/run/secret/token": "from-file\n", "/empty": " \n"}


def _read(path: str) -> str:
    if path not in FILES:
        raise FileNotFoundError(2, "No such file or directory")
    return FILES[path]


@pytest.mark.parametrize(
    ("flag", "flag_file", "env", "want"),
    [
        (None, None, {}, None),
        ("flag", None, {}, ("flag", "--token")),
        (None, "/run/secret/token", {}, ("from-file", "--token-file /run/secret/token")),
        (None, None, {"RINGKV_TOKEN": "env"}, ("env", "RINGKV_TOKEN")),
        (
            None,
            None,
            {"RINGKV_TOKEN_FILE": "/run/secret/token"},
            ("from-file", "RINGKV_TOKEN_FILE /run/secret/token"),
        ),
        # a flag wins over either variable, and over both
        (
            None,
            "/run/secret/token",
            {"RINGKV_TOKEN": "env"},
            ("from-file", "--token-file /run/secret/token"),
        ),
        ("flag", None, {"RINGKV_TOKEN_FILE": "/nope"}, ("flag", "--token")),
        ("flag", None, {"RINGKV_TOKEN": "a", "RINGKV_TOKEN_FILE": "/nope"}, ("flag", "--token")),
        ("", None, {"RINGKV_TOKEN": "env"}, ("env", "RINGKV_TOKEN")),  # empty: not given
    ],
)
def test_a_flag_wins_over_the_variables(
    flag: str | None, flag_file: str | None, env: dict[str, str], want: tuple[str, str] | None
) -> None:
    assert token_source(flag, flag_file, env, _read) == want


@pytest.mark.parametrize(
    ("flag", "flag_file", "env", "words"),
    [
        ("a", "/run/secret/token", {}, "give --token or --token-file, not both"),
        (
            None,
            None,
            {"RINGKV_TOKEN": "a", "RINGKV_TOKEN_FILE": "/run/secret/token"},
            "give RINGKV_TOKEN or RINGKV_TOKEN_FILE, not both",
        ),
        (None, "/nope", {}, "--token-file: cannot read /nope: No such file or directory"),
        (None, None, {"RINGKV_TOKEN_FILE": "/nope"}, "RINGKV_TOKEN_FILE: cannot read /nope"),
        (None, "/empty", {}, "--token-file: /empty is empty"),
    ],
)
def test_two_sources_at_one_level_or_a_bad_file_are_refused(
    flag: str | None, flag_file: str | None, env: dict[str, str], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        token_source(flag, flag_file, env, _read)


def test_the_cli_reads_the_variables_after_the_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given before or after the command, `--token-file` beats `$RINGKV_TOKEN`
    (it used to lose: the variable was the `--token` default); a bad token
    names where it came from."""
    path = tmp_path / "token"
    path.write_text("file-token\n")
    monkeypatch.setenv("RINGKV_TOKEN", "env-token")
    monkeypatch.delenv("RINGKV_TOKEN_FILE", raising=False)
    parser = build_parser()
    assert token(parser.parse_args(["get", "k"])) == "env-token"
    assert token(parser.parse_args(["--token-file", str(path), "get", "k"])) == "file-token"
    assert token(parser.parse_args(["get", "k", "--token-file", str(path)])) == "file-token"
    monkeypatch.setenv("RINGKV_TOKEN", "two words")
    with pytest.raises(ValueError, match="RINGKV_TOKEN: the token must be visible ASCII"):
        token(parser.parse_args(["get", "k"]))
