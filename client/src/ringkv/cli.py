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
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from ringkv.errors import (
    AuthError,
    BackupNotFoundError,
    BadRequestError,
    InvalidBackupError,
    NotFoundError,
    RingkvError,
)
from ringkv.exits import BAD_INPUT, CLUSTER_ERROR, NOT_FOUND, OK

__all__ = ["EXIT_CODES", "build_parser", "exit_code", "main"]

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


class _Help(argparse.RawDescriptionHelpFormatter):
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
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text!r}")
    return value


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1, not {text!r}")
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


def _b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode()


def _value_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode()


def _json(doc: Any) -> None:
    print(json.dumps(doc))


def _not_found(args: argparse.Namespace, doc: dict[str, Any]) -> int:
    if args.json:
        _json(doc)
    else:  # not on stdout: `v=$(ringkv get k)` must not capture it
        print(f"(not found: {args.key})", file=sys.stderr)
    return NOT_FOUND


# -- data commands ------------------------------------------------------------


def token(args: argparse.Namespace) -> str | None:
    """`--token`, else the file `--token-file` names (white space around it dropped)."""
    if args.token:
        return str(args.token)
    path = getattr(args, "token_file", None)
    if not path:
        return None
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError as exc:
        raise ValueError(f"--token-file {path}: {exc.strerror or exc}") from None
    if not text:
        raise ValueError(f"--token-file {path} is empty")
    return text


def require_token(args: argparse.Namespace, what: str) -> str:
    """The token, which admin routes always need."""
    found = token(args)
    if found is None:
        raise ValueError(
            f"{what} needs the cluster token: --token, --token-file, RINGKV_TOKEN or "
            "RINGKV_TOKEN_FILE (a local cluster keeps it in DATA_DIR/token)"
        )
    return found


def _client(args: argparse.Namespace) -> Any:
    from ringkv.client import Client

    return Client(seeds(args.url), token=token(args), timeout=args.timeout, direct=direct(args))


def cmd_get(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        entry = kv.get_entry(args.key, consistency=args.consistency)
    if entry is None:
        return _not_found(args, {"key": args.key, "found": False})
    if args.json:
        _json(
            {
                "key": args.key,
                "found": True,
                "value": _b64(entry.value),
                "version": entry.version,
                "expires_ms": entry.expires_ms,
            }
        )
    else:
        sys.stdout.buffer.write(entry.value + (b"" if args.raw else b"\n"))
    return OK


def cmd_put(args: argparse.Namespace) -> int:
    value = sys.stdin.buffer.read() if args.value == "-" else args.value.encode()
    with _client(args) as kv:
        previous = kv.put(args.key, value, consistency=args.consistency, ttl=args.ttl)
    if args.json:
        _json({"key": args.key, "created": previous is None, "previous": _b64(previous)})
    else:
        print("created" if previous is None else f"updated (was {_value_text(previous)})")
    return OK


def cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        previous = kv.delete(args.key, consistency=args.consistency)
    if previous is None:
        return _not_found(args, {"key": args.key, "deleted": False})
    if args.json:
        _json({"key": args.key, "deleted": True, "previous": _b64(previous)})
    else:
        print(f"deleted (was {_value_text(previous)})")
    return OK


def cmd_keys(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        want = None if args.limit is None else args.limit + 1  # one more: are there more?
        keys = kv.keys(prefix=args.prefix, start_after=args.start_after, limit=want)
    nxt = None
    if args.limit is not None and len(keys) > args.limit:
        keys = keys[: args.limit]
        nxt = keys[-1]
    if args.json:
        _json({"keys": keys, "next": nxt})
        return OK
    if keys:
        print("\n".join(keys))
    if nxt is not None:
        print(f"(more: --start-after {nxt})", file=sys.stderr)
    return OK


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        ring = kv.ring()
        # Not direct: the members' URLs may be out of reach; ask the --url nodes only.
        asked = (
            [(m.id, m.url) for m in ring.members]
            if direct(args)
            else [(url, url) for url in kv.seeds]
        )
        nodes = []
        for node_id, url in asked:
            try:
                nodes.append(kv.status(url))
            except RingkvError as exc:
                nodes.append({"node_id": node_id, "error": str(exc)})
    answered = {st["node_id"] for st in nodes}
    not_asked = [m.id for m in ring.members if m.id not in answered]
    unwell = [st["node_id"] for st in nodes if "error" in st or not st.get("ready")]
    if args.json:
        _json({"epoch": ring.epoch, "healthy": not unwell, "nodes": nodes, "not_asked": not_asked})
    else:
        print(f"ring epoch {ring.epoch}: {ring.partitions} partitions, N={ring.replication_factor}")
        for st in nodes:
            if "error" in st:
                print(f"  {st['node_id']:<16} DOWN  {st['error']}")
                continue
            storage = st["storage"]
            hints = sum(st["hints"]["backlog"].values())
            print(
                f"  {st['node_id']:<16} {'ready' if st['ready'] else 'NOT READY':<9} "
                f"partitions {st['partitions_owned']:<5} keys {storage.get('live', '?'):<9} "
                f"tombstones {storage.get('tombstones', '?'):<7} hints {hints:<6} "
                f"out-of-sync buckets {st['anti_entropy']['buckets_out_of_sync']}"
            )
        if not_asked:
            print(
                f"  not asked (direct routing off: only --url is reachable): {', '.join(not_asked)}"
            )
    if unwell:
        print(f"ringkv: not healthy: {', '.join(unwell)} down or not ready", file=sys.stderr)
        return CLUSTER_ERROR
    return OK


def cmd_ring(args: argparse.Namespace) -> int:
    with _client(args) as kv:
        ring = kv.ring()
    if args.json:
        _json(ring.to_dict())
        return OK
    print(f"epoch {ring.epoch}, {ring.partitions} partitions, N={ring.replication_factor}")
    for m in ring.members:
        zone = f" zone {m.zone}" if m.zone else ""
        print(f"  {m.id:<16} {m.url}{zone}  owns {len(ring.partitions_of(m.id))} partitions")
    return OK


async def _dump(args: argparse.Namespace, out: IO[str]) -> int:
    from ringkv.aio import AsyncClient
    from ringkv.dumpfile import DumpRecord, to_line

    count = deleted = 0
    async with AsyncClient(
        seeds(args.url), token=token(args), timeout=args.timeout, direct=direct(args)
    ) as kv:
        keys = [k async for k in kv.iter_keys(prefix=args.prefix)]
        bar = progress(len(keys), "dump", not args.quiet)
        sem = asyncio.Semaphore(32)

        async def fetch(key: str) -> DumpRecord | None:
            async with sem:
                entry = await kv.get_entry(key)
            if entry is None:  # deleted since it was listed
                return None
            return DumpRecord(key, entry.value, entry.version, entry.expires_ms)

        for start in range(0, len(keys), 1000):
            chunk = await asyncio.gather(*(fetch(k) for k in keys[start : start + 1000]))
            for rec in chunk:
                if rec is not None:
                    out.write(to_line(rec))
                    count += 1
            bar.update(len(chunk))
        bar.close()
        if args.deleted:
            async for key in kv.iter_keys(prefix=args.prefix, deleted=True):
                out.write(to_line(DumpRecord(key, deleted=True)))
                deleted += 1
    out.flush()
    extra = f" and {deleted} deleted" if args.deleted else ""
    print(f"dumped {count} keys{extra}", file=sys.stderr)
    return OK


def cmd_load(args: argparse.Namespace) -> int:
    from ringkv.client import Batch
    from ringkv.dumpfile import parse

    source = sys.stdin if args.file == "-" else open(args.file)  # noqa: SIM115
    bar = progress(None, "load", not args.quiet)
    loaded = expired = deleted = 0
    now_ms = time.time_ns() // 1_000_000
    try:
        with _client(args) as kv:
            batch: Batch = kv.batch()
            for rec in parse(source):
                if rec.deleted:
                    batch.delete(rec.key)
                    deleted += 1
                elif rec.expired(now_ms):
                    expired += 1  # it would read as absent: not written at all
                    continue
                else:
                    batch.put(rec.key, rec.value, expires_ms=rec.expires_ms)
                    loaded += 1
                if len(batch.ops) >= 500:
                    bar.update(len(batch.execute()))
                    batch = kv.batch()
            if batch.ops:
                bar.update(len(batch.execute()))
    finally:
        bar.close()
        if source is not sys.stdin:
            source.close()
    if args.json:
        _json({"loaded": loaded, "deleted": deleted, "expired": expired})
    else:
        print(
            f"loaded {loaded} keys, deleted {deleted}, skipped {expired} already expired",
            file=sys.stderr,
        )
    return OK


# -- the parser ------------------------------------------------------------------


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
    p.add_argument(
        "--token",
        default=dflt(os.environ.get("RINGKV_TOKEN") or None),
        help="the cluster token, when the cluster requires one (default: $RINGKV_TOKEN)",
    )
    p.add_argument(
        "--token-file",
        default=dflt(os.environ.get("RINGKV_TOKEN_FILE") or None),
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
    from ringkv import _cli_backup, _cli_local

    conn = argparse.ArgumentParser(add_help=False)
    _connection_options(conn, top=False)
    level = argparse.ArgumentParser(add_help=False)
    level.add_argument(
        "--consistency",
        choices=["one", "quorum", "all"],
        default=None,
        help="how many replicas must answer (default: the cluster's, quorum)",
    )
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", help="no progress bar")

    parser = argparse.ArgumentParser(
        prog="ringkv",
        allow_abbrev=False,  # `--to` of `backup create` is not an abbreviation of `--token`
        description=(__doc__ or "").split("\n")[0],
        formatter_class=_Help,
        epilog=EXIT_CODES,
    )
    _connection_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, func: Callable[[argparse.Namespace], int], text: str, *parents: Any
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            parents=[conn, *parents],
            help=text,
            description=text,
            formatter_class=_Help,
            epilog=EXIT_CODES,
        )
        p.set_defaults(func=func)
        return p

    p = command("get", cmd_get, "print a key's value", level)
    p.add_argument("key", help="the key")
    p.add_argument("--raw", action="store_true", help="no newline after the value")
    p = command("put", cmd_put, "store a value", level)
    p.add_argument("key", help="the key")
    p.add_argument("value", help="the value; '-' reads it from stdin")
    p.add_argument("--ttl", type=positive_int, default=None, help="expire after this many seconds")
    p = command("delete", cmd_delete, "delete a key", level)
    p.add_argument("key", help="the key")
    p = command("keys", cmd_keys, "list keys in order")
    p.add_argument("--prefix", default=None, help="only keys that start with this")
    p.add_argument("--start-after", default=None, help="only keys after this one (a cursor)")
    p.add_argument("--limit", type=positive_int, default=None, help="at most this many keys")
    command("status", cmd_status, "every node's state; exits 3 when a member is down or not ready")
    command("ring", cmd_ring, "members and partition ownership")
    p = command(
        "dump", lambda a: asyncio.run(_dump(a, sys.stdout)), "write every key as JSON lines", quiet
    )
    p.add_argument("--prefix", default=None, help="only keys that start with this")
    p.add_argument(
        "--deleted",
        action="store_true",
        help="also write the keys deleted within the tombstone grace period, so that a load "
        "deletes them in the target too",
    )
    p = command("load", cmd_load, "load JSON lines written by dump", quiet)
    p.add_argument("file", nargs="?", default="-", help="the dump file; '-' reads stdin")

    _cli_backup.add_commands(sub, _Help, conn, quiet)
    _cli_local.add_commands(sub, _Help)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except (RingkvError, ValueError, OSError) as exc:
        print(f"ringkv: {exc}", file=sys.stderr)
        return exit_code(exc)
