"""The READMEs' examples and the CLI's contract, against a real `ringkv local up`.

The `ringkv ...` lines of client/README.md's CLI block are read from the file
and run as written (through bash, so `> backup.jsonl` redirects); each must
do what its comment says. Then the exit-code table, the output rules and the
dump format's round trip, one case each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_local_cluster import node_pids, running

from ringkv import Client
from ringkv.cli import build_parser

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
BIN = str(Path(sys.executable).parent)  # the venv's `ringkv`


class Local:
    def __init__(self, data: Path, port: int) -> None:
        self.data = data
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RINGKV_URL": self.url}
        self.env.pop("RINGKV_TOKEN", None)

    def sh(self, line: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", line],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
            cwd=cwd or self.data.parent,
        )

    def ringkv(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [f"{BIN}/ringkv", *args], capture_output=True, text=True, timeout=120, env=self.env
        )


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    with running(tmp_path_factory.mktemp("cli"), 3) as up:
        yield Local(up.data, up.port)


def readme_block(path: Path, heading: str) -> list[str]:
    """The lines of the first fenced block after `heading`, comments dropped."""
    text = path.read_text()
    after = text[text.index(heading) :]
    block = re.search(r"```[a-z]*\n(.*?)```", after, re.S)
    assert block is not None
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines()]


Check = Callable[[subprocess.CompletedProcess[str], Path], None]


def out(expected: str) -> Check:
    def check(r: subprocess.CompletedProcess[str], cwd: Path) -> None:
        assert (r.returncode, r.stdout) == (0, expected), r.stderr

    return check


def not_found(r: subprocess.CompletedProcess[str], cwd: Path) -> None:
    assert (r.returncode, r.stdout) == (1, ""), r.stderr
    assert r.stderr == "(not found: greeting)\n"


def ten_users(r: subprocess.CompletedProcess[str], cwd: Path) -> None:
    assert (r.returncode, r.stdout) == (0, "".join(f"user:{i:02d}\n" for i in range(10)))
    assert r.stderr == "(more: --start-after user:09)\n"


def ten_users_json(r: subprocess.CompletedProcess[str], cwd: Path) -> None:
    doc = json.loads(r.stdout)
    keys = ["session:9", *(f"user:{i:02d}" for i in range(9))]
    assert doc == {"keys": keys, "next": "user:08"}


def status_ok(r: subprocess.CompletedProcess[str], cwd: Path) -> None:
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ring epoch 1: 256 partitions, N=3")
    assert r.stdout.count(" ready ") == 3


def ring_ok(r: subprocess.CompletedProcess[str], cwd: Path) -> None:
    assert r.returncode == 0
    assert r.stdout.startswith("epoch 1, 256 partitions, N=3\n")


def dumped(r: subprocess.CompletedProcess[str], cwd: Path) -> None:
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in (cwd / "backup.jsonl").read_text().splitlines()]
    assert len(lines) == 16 and r.stderr == "dumped 16 keys\n"
    session = next(doc for doc in lines if doc["key"] == "session:9")
    assert session["value"] == "eA==" and "@node-" in session["version"]
    assert 0 < session["expires_ms"] - time.time() * 1000 <= 3_600_000


def loaded(r: subprocess.CompletedProcess[str], cwd: Path) -> None:
    assert r.returncode == 0
    assert r.stderr == "loaded 16 keys, deleted 0, skipped 0 already expired\n"


EXAMPLES: list[tuple[str, Check]] = [
    ("ringkv put greeting hello", out("created\n")),
    ("ringkv get greeting", out("hello\n")),
    ("ringkv delete greeting", out("deleted (was hello)\n")),
    ("ringkv get greeting", not_found),
    ("ringkv put session:9 x --ttl 3600", out("created\n")),
    ("ringkv keys --prefix user: --limit 10", ten_users),
    ("ringkv --json keys --limit 10", ten_users_json),
    ("ringkv status", status_ok),
    ("ringkv ring", ring_ok),
    ("ringkv dump > backup.jsonl", dumped),
    ("ringkv load backup.jsonl", loaded),
]


def test_the_client_readme_cli_block_runs_as_written(local: Local, tmp_path: Path) -> None:
    lines = readme_block(ROOT / "client" / "README.md", "## CLI")
    assert lines[0].startswith("export RINGKV_URL=http://127.0.0.1:7100")
    commands = [line for line in lines if line.startswith("ringkv ")]
    assert commands[-1].startswith("ringkv local up")  # the fixture runs that one
    assert commands[:-1] == [cmd for cmd, _ in EXAMPLES], "README and test disagree"
    with Client(local.url) as kv:
        kv.put_many({f"user:{i:02d}": b"u" for i in range(15)})
    for cmd, check in EXAMPLES:
        check(local.sh(cmd, cwd=tmp_path), tmp_path)


def test_the_readme_python_example(local: Local) -> None:
    code = readme_block(ROOT / "README.md", "From Python")
    source = "\n".join(code).replace("http://127.0.0.1:7100", local.url)
    namespace: dict[str, object] = {}
    exec(compile(source, "README.md", "exec"), namespace)  # our own README's code
    kv = namespace["kv"]
    assert isinstance(kv, Client)
    assert kv.get("user:42") is None  # the example deletes what it wrote
    kv.close()


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["put", "k", "v", "--ttl", "999999999999"], 2, "ttl must be between"),  # a server 400
        (["put", "k", "v", "--ttl", "0"], 2, "--ttl: must be a whole number"),
        (["--timeout", "0", "get", "k"], 2, "--timeout: must be a number of seconds above 0"),
        (["get", "k", "--timeout", "-1"], 2, "--timeout"),
        (["keys", "--limit", "-1"], 2, "--limit: must be a whole number from 1"),
        (["put", "", "v"], 2, "key is empty"),
        (["put", "k" * 401, "v"], 2, "the limit is 400"),
        (["load", "/nonexistent/dump.jsonl"], 2, "No such file"),
        (["get"], 2, "required: key"),
        (["--url", "http://127.0.0.1:1", "get", "k"], 3, "no seed answered"),
        (["--token", "x\r\nX-Injected: yes", "get", "k"], 2, "visible ASCII"),  # a header
        (["get", "k", "--timeout", "inf"], 2, "--timeout"),
        (["backup", "prune", "--from", "nowhere", "--keep-last", "\uff11"], 2, "--keep-last"),
    ],
)
def test_exit_codes_as_the_table_says(local: Local, args: list[str], code: int, words: str) -> None:
    r = local.ringkv(*args)
    assert r.returncode == code, r.stdout + r.stderr
    assert words in r.stderr
    assert "Traceback" not in r.stderr


def test_output_rules(local: Local, tmp_path: Path) -> None:
    assert local.ringkv("put", "rule:k", "v").returncode == 0
    # connection options before or after the command; host:port means http://
    hostport = f"127.0.0.1:{local.port + 1}"
    for args in (["--url", hostport, "get", "rule:k"], ["get", "rule:k", "--url", hostport]):
        r = local.ringkv(*args)
        assert (r.returncode, r.stdout) == (0, "v\n"), r.stderr
    r = local.ringkv("--json", "--url", f"localhost:{local.port}", "get", "rule:k")
    doc = json.loads(r.stdout)
    assert (doc["value"], doc["found"], doc["expires_ms"]) == ("dg==", True, None)
    # nothing on stdout for a miss or an empty listing
    captured = local.sh('v=$(ringkv get rule:missing); echo "[$v] $?"')
    assert captured.stdout == "[] 1\n" and "(not found: rule:missing)" in captured.stderr
    r = local.ringkv("keys", "--prefix", "nomatch")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert json.loads(local.ringkv("--json", "keys", "--prefix", "nomatch").stdout) == {
        "keys": [],
        "next": None,
    }
    # --help shows defaults
    for args in ([], ["get"], ["keys"], ["local", "up"], ["local", "remove-node"]):
        assert "(default: " in local.ringkv(*args, "--help").stdout, args


def test_every_option_has_a_help_line() -> None:
    def walk(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.Action]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, p in action.choices.items():
                    yield from walk(p, f"{name} {sub}")
            else:
                yield name, action

    missing = [f"{name} {a.dest}" for name, a in walk(build_parser(), "ringkv") if not a.help]
    assert missing == []


def test_a_closed_stdout_or_a_bad_option_is_said_before_any_work(tmp_path: Path) -> None:
    """`ringkv get k >&-` raised AttributeError; a bad `--drop-delay` started
    nodes that then refused it; a `--summary-file` that cannot be written
    failed after the backup. None of these needs a cluster."""
    env = {**os.environ, "RINGKV_URL": "http://127.0.0.1:9"}
    r = subprocess.run(
        [f"{BIN}/ringkv", "get", "k"],
        stderr=subprocess.PIPE, text=True, timeout=60, env=env,
        preexec_fn=lambda: os.close(1),
    )  # fmt: skip
    assert (r.returncode, r.stderr) == (2, "ringkv: standard output is closed\n")
    for args, words in (
        (["local", "up", "--drop-delay", "-5", "--data-dir", str(tmp_path / "d")],
         "not a duration"),
        (["backup", "verify", "--from", str(tmp_path), "--summary-file", "/nonexistent/s"],
         "cannot write /nonexistent/s"),
    ):  # fmt: skip
        r = subprocess.run(
            [f"{BIN}/ringkv", *args], capture_output=True, text=True, timeout=60, env=env
        )
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)
    assert not (tmp_path / "d").exists()


def test_dump_and_load_keep_expiry_and_deletes(local: Local, tmp_path: Path) -> None:
    assert local.ringkv("put", "ttl:k", "v", "--ttl", "3").returncode == 0
    assert local.ringkv("put", "ttl:gone", "v").returncode == 0
    assert local.ringkv("delete", "ttl:gone").returncode == 0
    dump = local.sh("ringkv dump --deleted --prefix ttl: > ttl.jsonl", cwd=tmp_path)
    assert dump.returncode == 0 and dump.stderr == "dumped 1 keys and 1 deleted\n"
    records = [json.loads(line) for line in (tmp_path / "ttl.jsonl").read_text().splitlines()]
    assert [r["key"] for r in records] == ["ttl:k", "ttl:gone"]
    expires = records[0]["expires_ms"]
    assert records[1] == {"key": "ttl:gone", "deleted": True}
    # the target holds other copies: the live key without a TTL, the deleted one alive
    assert local.ringkv("put", "ttl:k", "forever").returncode == 0
    assert local.ringkv("put", "ttl:gone", "back").returncode == 0
    r = local.ringkv("--json", "load", str(tmp_path / "ttl.jsonl"))
    assert json.loads(r.stdout) == {"loaded": 1, "deleted": 1, "expired": 0}
    doc = json.loads(local.ringkv("--json", "get", "ttl:k").stdout)
    assert (doc["value"], doc["expires_ms"]) == ("dg==", expires)  # the same moment
    assert local.ringkv("get", "ttl:gone").returncode == 1
    deadline = time.monotonic() + 10
    while local.ringkv("get", "ttl:k").returncode == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert time.time() * 1000 >= expires - 50  # it expired when the source said
    assert local.ringkv("get", "ttl:k").returncode == 1
    # loaded after its expiry: not written at all
    r = local.ringkv("--json", "load", str(tmp_path / "ttl.jsonl"))
    assert json.loads(r.stdout) == {"loaded": 0, "deleted": 1, "expired": 1}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "a", "value": "not base64!"}\n')
    r = local.ringkv("load", str(bad))
    assert r.returncode == 2 and "line 1: not a ringkv dump record" in r.stderr


def test_status_fails_when_a_member_does_not_answer(local: Local) -> None:
    pid = node_pids(local.data)["node-2"]
    os.kill(pid, signal.SIGSTOP)  # up but silent: the supervisor does not restart it
    try:
        r = local.ringkv("--timeout", "1", "status")
        assert r.returncode == 3, r.stdout
        assert "node-2" in r.stdout and "DOWN" in r.stdout
        assert "not healthy: node-2" in r.stderr
        doc = json.loads(local.ringkv("--timeout", "1", "--json", "status").stdout)
        assert doc["healthy"] is False
    finally:
        os.kill(pid, signal.SIGCONT)
    assert local.ringkv("status").returncode == 0


def test_a_load_that_meets_a_bad_record_says_where_and_what_was_written(
    local: Local, tmp_path: Path
) -> None:
    lines = [json.dumps({"key": f"bad:{i}", "value": "eA=="}) for i in range(5600)]
    lines.append(json.dumps({"key": "", "value": "eA=="}))
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    r = local.ringkv("load", str(tmp_path / "bad.jsonl"))
    assert r.returncode == 2, r.stderr
    assert "line 5601: " in r.stderr and "key is empty" in r.stderr, r.stderr
    assert "the 5000 records before it were written" in r.stderr, r.stderr  # 5,000 a call
    assert "Traceback" not in r.stderr
