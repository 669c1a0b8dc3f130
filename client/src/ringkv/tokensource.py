"""Where the cluster token comes from: one rule for the node and the CLI (design §7.2).

`--token` or `--token-file`, else `RINGKV_TOKEN` or `RINGKV_TOKEN_FILE`: a
flag wins over either variable (a shell that exports `RINGKV_TOKEN` for the
CLI must not break a node, or a command, given `--token-file`), and two
flags, or two variables, are refused rather than one chosen silently. A
file's surrounding white space (its newline) is dropped. Pure: the caller
gives the environment and how to read a file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

__all__ = ["token_source"]


def token_source(
    flag: str | None,
    flag_file: str | None,
    environ: Mapping[str, str],
    read: Callable[[str], str],
) -> tuple[str, str] | None:
    """(token, where it came from: `--token`, `--token-file PATH`,
    `RINGKV_TOKEN` or `RINGKV_TOKEN_FILE PATH`), or None when none is given;
    ValueError for two sources at one level, or a file that cannot be
    read or is empty. The token itself is not checked here."""
    for token, path, names in (
        (flag, flag_file, ("--token", "--token-file")),
        (
            environ.get("RINGKV_TOKEN"),
            environ.get("RINGKV_TOKEN_FILE"),
            ("RINGKV_TOKEN", "RINGKV_TOKEN_FILE"),
        ),
    ):
        if token and path:
            raise ValueError(f"give {names[0]} or {names[1]}, not both")
        if token:
            return token, names[0]
        if path:
            try:
                text = read(path).strip()
            except OSError as exc:
                raise ValueError(f"{names[1]}: cannot read {path}: {exc.strerror or exc}") from None
            if not text:
                raise ValueError(f"{names[1]}: {path} is empty")
            return text, f"{names[1]} {path}"
    return None
