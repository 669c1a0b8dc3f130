"""What the `ringkv` CLI's command modules share: exit codes, argument types,
seeds, the token, output helpers.

The parser (`ringkv.cli`), the command modules (`data`, `backup`, `local`)
and the kubectl plugin import these from here; this module imports none of
them, so no command module imports the parser back (no import circle).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any

from ringkv._core import MAX_TIMEOUT_S, check_token
from ringkv.digits import is_digits
from ringkv.errors import (
    AuthError,
    BackupNotFoundError,
    BadRequestError,
    InvalidArgumentError,
    InvalidBackupError,
    NotFoundError,
    RingkvError,
)
from ringkv.exits import BAD_INPUT, CLUSTER_ERROR, NOT_FOUND
from ringkv.tokensource import token_source
from ringkv.units import parse_duration

DEFAULT_URL = "http://127.0.0.1:7100"
EXIT_CODES = """exit codes:
  0  ok
  1  not found: get or delete of a key that is absent; a backup that is not there
  2  bad input: a wrong option, a key, value or ttl the cluster refuses (400/413),
     a missing or wrong token (401/403), a bad dump file, a refused local operation,
     a backup that does not verify
  3  cluster error: no answer, not enough replicas, any other node error;
     `status`: a member is down or not ready; a backup destination that fails
"""


def exit_code(exc: BaseException) -> int:
    """The exit status for an error a command raised."""
    if isinstance(exc, NotFoundError | BackupNotFoundError):
        return NOT_FOUND
    if isinstance(exc, BadRequestError | AuthError | InvalidBackupError):  # the input was wrong
        return BAD_INPUT
    if isinstance(exc, RingkvError):
        return CLUSTER_ERROR
    return BAD_INPUT  # ValueError, OSError: an argument or a file


class Help(argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help line (unless it says it already)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if not action.option_strings or "default" in text or default in (None, False):
            return text
        if default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= MAX_TIMEOUT_S:  # also NaN and inf (socket timeouts overflow)
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:.0f}, not {text!r}"
        )
    return value


def positive_int(text: str) -> int:
    if not is_digits(text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1, not {text!r}")
    return int(text)


def duration_text(text: str) -> str:
    """`text` when a node takes it as a duration (`ringkv.units`): passed on as given."""
    try:
        parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def whole_number(text: str) -> int:
    if not is_digits(text):
        raise argparse.ArgumentTypeError(f"must be a whole number from 0, not {text!r}")
    return int(text)


def seeds(url_text: str) -> list[str]:
    """Seed URLs from `--url`: comma-separated; `host:port` means http://host:port."""
    out = []
    for item in (u.strip() for u in url_text.split(",")):
        if item:
            out.append(item if "://" in item else f"http://{item}")
    if not out:
        raise ValueError("--url names no node")
    return out


def env_flag(name: str) -> bool | None:
    """A yes/no environment variable: 1/true/yes/on, 0/false/no/off, or unset (None)."""
    text = os.environ.get(name, "").strip().lower()
    if not text:
        return None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"${name} must be 1 or 0 (true/false, yes/no, on/off), not {text!r}")


def direct(args: argparse.Namespace) -> bool:
    """`--direct`/`--no-direct`, else $RINGKV_DIRECT, else on: read when a command runs."""
    if args.direct is not None:
        return bool(args.direct)
    flag = env_flag("RINGKV_DIRECT")
    return True if flag is None else flag


# -- output ---------------------------------------------------------------------


def progress(total: int | None, desc: str, enabled: bool, unit: str = "key") -> Any:
    """A tqdm bar on stderr when tqdm is installed and stderr is a terminal."""
    try:
        from tqdm import tqdm
    except ImportError:
        enabled = False
    if not enabled or not sys.stderr.isatty():
        return NoBar()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)


class NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode()


def value_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode()


def print_json(doc: Any) -> None:
    print(json.dumps(doc))


def not_found(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    if args.json:
        print_json(doc)
    else:  # not on stdout: `v=$(ringkv get k)` must not capture it
        print(f"(not found: {args.key})", file=sys.stderr)
    return NOT_FOUND


# -- the cluster token ----------------------------------------------------------


def token(args: argparse.Namespace) -> str | None:
    """`--token` or `--token-file`, else `$RINGKV_TOKEN` or `$RINGKV_TOKEN_FILE`
    (`ringkv.tokensource`: a flag wins over either variable, and two at one
    level are refused), checked."""
    found = token_source(
        getattr(args, "token", None), getattr(args, "token_file", None), os.environ, _read
    )
    return None if found is None else _checked_token(*found)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _checked_token(text: str, where: str) -> str:
    """`text` if `check_token` takes it, else ValueError saying `where` it came from."""
    try:
        return str(check_token(text))
    except InvalidArgumentError as exc:
        raise ValueError(f"{where}: {exc}") from None


def require_token(args: argparse.Namespace, what: str) -> str:
    """The token, which admin routes always need."""
    found = token(args)
    if found is None:
        raise ValueError(
            f"{what} needs the cluster token: --token, --token-file, RINGKV_TOKEN or "
            "RINGKV_TOKEN_FILE (a local cluster keeps it in DATA_DIR/token)"
        )
    return found
