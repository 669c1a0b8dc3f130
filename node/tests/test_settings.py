from __future__ import annotations

import pytest

from ringkv_node.settings import (
    Peer,
    SettingsError,
    parse_duration,
    parse_settings,
    parse_size,
)


def test_defaults_make_a_single_node_ring_of_itself() -> None:
    s = parse_settings([], {}, hostname="kv-0")
    assert (s.node_id, s.host, s.port) == ("kv-0", "0.0.0.0", 8080)
    assert s.advertise_url == "http://kv-0:8080"
    assert s.peers == (Peer("kv-0", "http://kv-0:8080"),)
    assert (s.replication_factor, s.partitions, s.durability) == (1, 256, "fsync")
    assert s.token is None
    assert s.limits.max_value_bytes == 4 << 20
    assert s.tombstone_grace_s == 86400


def test_environment_and_flags_flag_wins() -> None:
    env = {
        "RINGKV_NODE_ID": "a",
        "RINGKV_LISTEN": "127.0.0.1:7000",
        "RINGKV_PEERS": "a=http://h1:7000,b@z2=http://h2:7000/,c=http://h3:7000",
        "RINGKV_TOKEN": "t",
        "RINGKV_MAP_SIZE": "1Gi",
        "RINGKV_DURABILITY": "async",
    }
    s = parse_settings(["--partitions", "64", "--map-size", "512Mi"], env)
    assert s.node_id == "a"
    assert s.advertise_url == "http://127.0.0.1:7000"
    assert [p.id for p in s.peers] == ["a", "b", "c"]
    assert s.peers[1] == Peer("b", "http://h2:7000", "z2")
    assert (s.replication_factor, s.partitions, s.map_size) == (3, 64, 512 << 20)
    assert (s.token, s.durability) == ("t", "async")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--listen", "nope"], "--listen"),
        (["--listen", "h:99999"], "--listen"),
        (["--listen", "h:\u00b2"], "--listen"),
        (["--max-key-bytes", "440"], "--max-key-bytes"),
        (["--id", "bad id"], "--id"),
        (["--partitions", "100"], "power of two"),
        (["--partitions", "x"], "--partitions"),
        (["--replication-factor", "2"], "between 1 and the number of peers"),
        (["--peers", "a=ftp://x"], "id=http"),
        (["--peers", "a=http://h:1,a=http://h:2", "--id", "a"], "unique"),
        (["--durability", "maybe"], "fsync or async"),
        (["--map-size", "lots"], "--map-size"),
        (["--map-size", "1k"], "at least 1Mi"),
        (["--tombstone-grace", "forever"], "--tombstone-grace"),
        (["--log-level", "loud"], "--log-level"),
    ],
)
def test_bad_settings_name_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_settings(argv, {}, hostname="a")


def test_a_node_not_among_the_peers_joins_them() -> None:
    """The operator's pods past the seeds: they take the seeds' ring and own nothing."""
    s = parse_settings(
        ["--id", "kv-3", "--peers", "kv-0=http://a:1,kv-1=http://b:1", "--token", "t"],
        {},
        hostname="kv-3",
    )
    assert s.node_id == "kv-3"
    assert [p.id for p in s.peers] == ["kv-0", "kv-1"]
    assert s.replication_factor == 2


def test_sizes_and_durations() -> None:
    assert parse_size("4Gi") == 4 << 30
    assert parse_size("512MiB") == 512 << 20
    assert parse_size("1024") == 1024
    assert parse_duration("24h") == 86400
    assert parse_duration("500ms") == 0.5
    assert parse_duration("7") == 7
    with pytest.raises(ValueError, match="size"):
        parse_size("-1")


def test_the_token_comes_from_a_file_or_the_environment() -> None:
    files = {"/run/secret/token": "s3cret\n", "/empty": "\n"}

    def read(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(2, "No such file or directory")
        return files[path]

    def token(argv: list[str], env: dict[str, str]) -> str | None:
        return parse_settings(argv, env, hostname="a", read_file=read).token

    assert token(["--token-file", "/run/secret/token"], {}) == "s3cret"  # the newline goes
    assert token([], {"RINGKV_TOKEN_FILE": "/run/secret/token"}) == "s3cret"
    assert token([], {"RINGKV_TOKEN": "env"}) == "env"
    # a flag wins over either variable (a shell exporting RINGKV_TOKEN for the CLI)
    assert token(["--token-file", "/run/secret/token"], {"RINGKV_TOKEN": "env"}) == "s3cret"
    assert token(["--token", "flag"], {"RINGKV_TOKEN_FILE": "/nope"}) == "flag"
    for argv, env, message in [
        (["--token", "a", "--token-file", "/run/secret/token"], {}, "not both"),
        ([], {"RINGKV_TOKEN": "a", "RINGKV_TOKEN_FILE": "/run/secret/token"}, "not both"),
        (["--token-file", "/nope"], {}, "cannot read /nope: No such file"),
        (["--token-file", "/empty"], {}, "/empty is empty"),
    ]:
        with pytest.raises(SettingsError, match=message):
            token(argv, env)
