"""The `ringkv` command line: data commands over the client, and `local` clusters.

    ringkv put greeting hello            ringkv get greeting
    ringkv keys --prefix user:           ringkv status / ring
    ringkv dump > backup.jsonl           ringkv load backup.jsonl
    ringkv backup create --to DIR        ringkv restore --from DIR
    ringkv local up --nodes 3

`--url` (or RINGKV_URL, default http://127.0.0.1:7100) and `--token` (or
RINGKV_TOKEN; `--token-file` or RINGKV_TOKEN_FILE) choose the cluster, before
or after the command; `--no-direct` (or RINGKV_DIRECT=0) sends every request
to `--url` only, for a cluster reached through a port-forward (`kubectl
ringkv connect`). Output is for people; `--json` is for scripts (values in
base64). Exit codes: `EXIT_CODES`.

Here: the parser, its connection options and `main`. The commands are in
`data` (get, put, delete, keys, status, ring, dump, load), `backup` (backup
..., restore) and `local` (local up, add-node, remove-node); what they and the
kubectl plugin share is in `common`, which imports none of them.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ringkv.cli import backup, data, local
from ringkv.cli.common import DEFAULT_URL, EXIT_CODES, Help, exit_code, positive_float
from ringkv.errors import RingkvError
from ringkv.exits import BAD_INPUT

__all__ = ["EXIT_CODES", "build_parser", "exit_code", "main"]


def _connection_options(p: argparse.ArgumentParser, *, top: bool) -> None:
    """--url, --token, --timeout, --json: before the command (`top`) or after it.

    After it they default to SUPPRESS, so a value given before the command
    is not overwritten by the subcommand's default (argparse would)."""

    def dflt(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    url = os.environ.get("RINGKV_URL") or DEFAULT_URL
    p.add_argument(
        "--url",
        default=dflt(url),
        help="node URL, comma-separated seeds, or ringkv://<headless service>:8080; "
        f"host:port means http://host:port (default: $RINGKV_URL, else {DEFAULT_URL})",
    )
    # the variables are read later (`common.token`): either flag wins over both
    p.add_argument(
        "--token",
        default=dflt(None),
        help="the cluster token, when the cluster requires one (default: $RINGKV_TOKEN)",
    )
    p.add_argument(
        "--token-file",
        default=dflt(None),
        help="read the cluster token from this file, e.g. a mounted Secret "
        "(default: $RINGKV_TOKEN_FILE)",
    )
    p.add_argument(
        "--direct",
        action=argparse.BooleanOptionalAction,
        default=dflt(None),
        help="send each key straight to its owners' own URLs (on), or every request to --url "
        "only (--no-direct: for a cluster reached through a port-forward or a load balancer; "
        "any node coordinates any key) (default: $RINGKV_DIRECT=1|0, else on)",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=dflt(10.0),
        help="seconds to wait for each answer (default: 10)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        default=dflt(False),
        help="JSON output for scripts; values are base64",
    )


def build_parser() -> argparse.ArgumentParser:
    conn = argparse.ArgumentParser(add_help=False)
    _connection_options(conn, top=False)
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", help="no progress bar")

    parser = argparse.ArgumentParser(
        prog="ringkv",
        allow_abbrev=False,  # `--to` of `backup create` is not an abbreviation of `--token`
        description=(__doc__ or "").split("\n")[0],
        formatter_class=Help,
        epilog=EXIT_CODES,
    )
    _connection_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data.add_commands(sub, Help, conn, quiet)
    backup.add_commands(sub, Help, conn, quiet)
    local.add_commands(sub, Help)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if sys.stdout is None:  # started with fd 1 closed (`ringkv get k >&-`)
        print("ringkv: standard output is closed", file=sys.stderr)
        return BAD_INPUT
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ringkv dump | head`: the reader had enough, as for cat
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except (RingkvError, ValueError, OSError) as exc:
        print(f"ringkv: {exc}", file=sys.stderr)
        return exit_code(exc)
