"""Node settings from flags and environment variables (DESIGN §3a).

Every flag has a `RINGKV_*` variable (the StatefulSet sets variables; people
type flags); a flag wins over its variable. Parsing is pure: argv and the
environment come in (and `read_file`, for `--token-file`), a validated
`Settings` comes out, and anything wrong is a `SettingsError` whose message
names the flag.

The cluster token is best given as a file (`--token-file`, a mounted Secret)
or in the environment: a `--token` on the command line is visible to every
local user in `ps`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ringkv.digits import is_digits
from ringkv.keys import DEFAULT_LIMITS, MAX_KEY_BYTES, Limits
from ringkv.tokensource import token_source
from ringkv.units import parse_duration, parse_size

__all__ = ["Peer", "Settings", "SettingsError", "parse_duration", "parse_settings", "parse_size"]


T = TypeVar("T")


class SettingsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Peer:
    id: str
    url: str
    zone: str = ""


@dataclass(frozen=True, slots=True)
class Settings:
    node_id: str
    host: str
    port: int
    advertise_url: str
    data_dir: str
    peers: tuple[Peer, ...]
    replication_factor: int
    partitions: int
    token: str | None = None
    data_auth: bool = True  # data routes need the token too (when there is one)
    zone: str = ""
    durability: str = "fsync"  # or "async"
    map_size: int = 4 << 30
    limits: Limits = field(default_factory=Limits)
    tombstone_grace_s: float = 86400.0
    sweep_interval_s: float = 10.0
    shutdown_timeout_s: float = 10.0
    log_level: str = "info"
    read_consistency: str = "quorum"
    write_consistency: str = "quorum"
    anti_entropy_interval_s: float = 30.0
    hint_interval_s: float = 1.0
    replica_timeout_s: float = 2.0
    drop_delay_s: float = 60.0
    body_timeout_s: float = 60.0


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _parse_peers(text: str) -> tuple[Peer, ...]:
    peers: list[Peer] = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        ident, sep, url = item.partition("=")
        if not sep or not ident or not url.startswith(("http://", "https://")):
            raise ValueError(f"peer {item!r} is not of the form id=http://host:port")
        zone = ""
        if "@" in ident:
            ident, zone = ident.split("@", 1)
        peers.append(Peer(ident, url.rstrip("/"), zone))
    ids = [p.id for p in peers]
    if len(set(ids)) != len(ids):
        raise ValueError("peer ids must be unique")
    return tuple(peers)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ringkv-node",
        description="A ringkv storage node. Every flag may also be given as RINGKV_<FLAG>.",
    )
    add = p.add_argument
    add("--id", dest="id", help="member id (pod name under Kubernetes) [RINGKV_NODE_ID]")
    add("--listen", help="host:port to listen on (default 0.0.0.0:8080) [RINGKV_LISTEN]")
    add("--advertise-url", help="URL peers use to reach this node [RINGKV_ADVERTISE_URL]")
    add("--data-dir", help="LMDB and hints live here (default ./data) [RINGKV_DATA_DIR]")
    add("--peers", help="initial members: id=url,id=url,... (id@zone=url sets a zone)")
    add("--replication-factor", help="N for the first ring (default min(3, members))")
    add("--partitions", help="Q for the first ring, a power of two (default 256)")
    add(
        "--token",
        help="cluster token for Authorization: Bearer; visible in `ps`: prefer --token-file "
        "or the variable [RINGKV_TOKEN]",
    )
    add("--token-file", help="read the cluster token from this file [RINGKV_TOKEN_FILE]")
    add(
        "--data-auth", help="on (default): data routes need the token too; off: only admin/internal"
    )
    add("--zone", help="this node's zone [RINGKV_ZONE]")
    add("--durability", help="fsync (default) or async [RINGKV_DURABILITY]")
    add("--map-size", help="LMDB map size, e.g. 4Gi (default) [RINGKV_MAP_SIZE]")
    add("--max-key-bytes", help="default 400, at most 439 [RINGKV_MAX_KEY_BYTES]")
    add("--max-value-bytes", help="default 4Mi [RINGKV_MAX_VALUE_BYTES]")
    add("--max-batch-ops", help="default 10000 [RINGKV_MAX_BATCH_OPS]")
    add("--max-batch-bytes", help="default 16Mi [RINGKV_MAX_BATCH_BYTES]")
    add("--tombstone-grace", help="keep tombstones this long (default 24h)")
    add("--sweep-interval", help="purge expired keys/tombstones this often (default 10s)")
    add("--shutdown-timeout", help="drain in-flight requests this long on SIGTERM (default 10s)")
    add("--log-level", help="debug, info (default), warning, error [RINGKV_LOG_LEVEL]")
    add("--read-consistency", help="default level of reads: one, quorum (default), all")
    add("--write-consistency", help="default level of writes: one, quorum (default), all")
    add("--anti-entropy-interval", help="compare digests with peers this often (default 30s)")
    add("--hint-interval", help="retry hinted handoff this often (default 1s)")
    add("--replica-timeout", help="give up on a peer request after this (default 2s)")
    add("--drop-delay", help="after a ring commit, keep partitions no longer owned this long")
    add("--body-timeout", help="a request body not received within this is a 408 (default 60s)")
    return p


_ENV = {
    "id": "RINGKV_NODE_ID",
    "listen": "RINGKV_LISTEN",
    "advertise_url": "RINGKV_ADVERTISE_URL",
    "data_dir": "RINGKV_DATA_DIR",
    "peers": "RINGKV_PEERS",
    "replication_factor": "RINGKV_REPLICATION_FACTOR",
    "partitions": "RINGKV_PARTITIONS",
    "token": "RINGKV_TOKEN",
    "token_file": "RINGKV_TOKEN_FILE",
    "zone": "RINGKV_ZONE",
    "data_auth": "RINGKV_DATA_AUTH",
    "durability": "RINGKV_DURABILITY",
    "map_size": "RINGKV_MAP_SIZE",
    "max_key_bytes": "RINGKV_MAX_KEY_BYTES",
    "max_value_bytes": "RINGKV_MAX_VALUE_BYTES",
    "max_batch_ops": "RINGKV_MAX_BATCH_OPS",
    "max_batch_bytes": "RINGKV_MAX_BATCH_BYTES",
    "tombstone_grace": "RINGKV_TOMBSTONE_GRACE",
    "sweep_interval": "RINGKV_SWEEP_INTERVAL",
    "shutdown_timeout": "RINGKV_SHUTDOWN_TIMEOUT",
    "log_level": "RINGKV_LOG_LEVEL",
    "read_consistency": "RINGKV_READ_CONSISTENCY",
    "write_consistency": "RINGKV_WRITE_CONSISTENCY",
    "anti_entropy_interval": "RINGKV_ANTI_ENTROPY_INTERVAL",
    "hint_interval": "RINGKV_HINT_INTERVAL",
    "replica_timeout": "RINGKV_REPLICA_TIMEOUT",
    "drop_delay": "RINGKV_DROP_DELAY",
    "body_timeout": "RINGKV_BODY_TIMEOUT",
}


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _token(
    ns: argparse.Namespace, environ: Mapping[str, str], read: Callable[[str], str]
) -> str | None:
    """The cluster token from --token or --token-file, else RINGKV_TOKEN or
    RINGKV_TOKEN_FILE (`ringkv.tokensource`: a flag wins over either variable)."""
    try:
        found = token_source(ns.token, ns.token_file, environ, read)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return None if found is None else found[0]


def parse_settings(
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    hostname: str = "localhost",
    read_file: Callable[[str], str] = _read_text,
) -> Settings:
    """Build Settings from argv (without the program name) and the environment."""
    try:
        ns = _parser().parse_args(list(argv))
    except SystemExit as exc:  # argparse already printed why
        raise SettingsError("invalid command line") from exc
    raw: dict[str, str | None] = {}
    for name, var in _ENV.items():
        value = getattr(ns, name)
        raw[name] = value if value is not None else environ.get(var)

    def get(name: str, default: str) -> str:
        value = raw[name]
        return default if value is None or value == "" else value

    def conv(name: str, default: str, fn: Callable[[str], T]) -> T:
        text = get(name, default)
        try:
            return fn(text)
        except ValueError as exc:
            flag = "--" + name.replace("_", "-")
            raise SettingsError(f"{flag} ({_ENV[name]}): {exc}") from None

    listen = get("listen", "0.0.0.0:8080")
    host, sep, port_text = listen.rpartition(":")
    if not sep or not is_digits(port_text) or not 0 < int(port_text) < 65536:
        raise SettingsError(f"--listen: {listen!r} is not host:port")
    port = int(port_text)
    host = host.strip("[]") or "0.0.0.0"

    node_id = get("id", hostname)
    if not _ID.match(node_id):
        raise SettingsError(f"--id: {node_id!r} must be 1-63 of [A-Za-z0-9._-]")
    zone = get("zone", "")
    adv_host = hostname if host in ("0.0.0.0", "::") else host
    advertise_url = get("advertise_url", f"http://{adv_host}:{port}").rstrip("/")

    peers = conv("peers", "", _parse_peers)
    if not peers:
        peers = (Peer(node_id, advertise_url, zone),)
    # A node not among --peers joins the running cluster the peers form: it
    # takes their ring and owns nothing until a rebalance gives it partitions
    # (how the operator adds pods past the seeds; design §7.6).

    partitions = conv("partitions", "256", int)
    if partitions < 1 or partitions > 65536 or partitions & (partitions - 1):
        raise SettingsError("--partitions must be a power of two from 1 to 65536")
    rf = conv("replication_factor", str(min(3, len(peers))), int)
    if not 1 <= rf <= len(peers):
        raise SettingsError(
            f"--replication-factor must be between 1 and the number of peers ({len(peers)})"
        )

    token = _token(ns, environ, read_file)
    if len(peers) > 1 and token is None:
        raise SettingsError(
            "--token: a cluster of several nodes needs a cluster token (peers authenticate "
            "to each other with it); `ringkv local up` makes one for you"
        )

    data_auth_text = get("data_auth", "on").lower()
    if data_auth_text not in ("on", "off", "true", "false"):
        raise SettingsError("--data-auth must be on or off")
    data_auth = data_auth_text in ("on", "true")

    durability = get("durability", "fsync")
    if durability not in ("fsync", "async"):
        raise SettingsError("--durability must be fsync or async")
    levels = {}
    for name in ("read_consistency", "write_consistency"):
        levels[name] = get(name, "quorum")
        if levels[name] not in ("one", "quorum", "all"):
            raise SettingsError(f"--{name.replace('_', '-')} must be one, quorum or all")
    log_level = get("log_level", "info").lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise SettingsError("--log-level must be debug, info, warning or error")

    def size(name: str, default: str) -> int:
        value = conv(name, default, parse_size)
        if value < 1:
            raise SettingsError(f"--{name.replace('_', '-')} must be positive")
        return value

    def duration(name: str, default: str) -> float:
        return conv(name, default, parse_duration)

    max_key_bytes = size("max_key_bytes", str(DEFAULT_LIMITS.max_key_bytes))
    if max_key_bytes > MAX_KEY_BYTES:
        raise SettingsError(
            f"--max-key-bytes must be at most {MAX_KEY_BYTES} (LMDB's keys are at most "
            f"511 bytes, and the node adds up to 72 to a key), not {max_key_bytes}"
        )
    limits = Limits(
        max_key_bytes=max_key_bytes,
        max_value_bytes=size("max_value_bytes", "4Mi"),
        max_batch_ops=size("max_batch_ops", "10000"),
        max_batch_bytes=size("max_batch_bytes", "16Mi"),
    )
    map_size = size("map_size", "4Gi")
    if map_size < 1 << 20:
        raise SettingsError("--map-size must be at least 1Mi")
    return Settings(
        node_id=node_id,
        host=host,
        port=port,
        advertise_url=advertise_url,
        data_dir=get("data_dir", "./data"),
        peers=peers,
        replication_factor=rf,
        partitions=partitions,
        token=token,
        data_auth=data_auth,
        zone=zone,
        durability=durability,
        map_size=map_size,
        limits=limits,
        tombstone_grace_s=duration("tombstone_grace", "24h"),
        sweep_interval_s=max(0.05, duration("sweep_interval", "10s")),
        shutdown_timeout_s=duration("shutdown_timeout", "10s"),
        log_level=log_level,
        read_consistency=levels["read_consistency"],
        write_consistency=levels["write_consistency"],
        anti_entropy_interval_s=max(0.1, duration("anti_entropy_interval", "30s")),
        hint_interval_s=max(0.05, duration("hint_interval", "1s")),
        replica_timeout_s=max(0.05, duration("replica_timeout", "2s")),
        drop_delay_s=duration("drop_delay", "60s"),
        body_timeout_s=max(0.1, duration("body_timeout", "60s")),
    )
