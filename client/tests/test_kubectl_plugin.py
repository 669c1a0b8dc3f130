"""`kubectl ringkv`'s arguments and kubeconfig handling, with real kubeconfig files.

No API server here (tier 3 is tests/cluster/test_kubectl_k8s.py): the options, the
namespace and context kubectl would pick, the errors before any request,
and an API server that does not answer.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ringkv.kubectl import Kube, build_parser, main

PLUGIN = str(Path(sys.executable).parent / "kubectl-ringkv")


def kubeconfig(path: Path, current: str | None, **namespaces: str | None) -> Path:
    """A kubeconfig with a context per keyword (its namespace), all on one server."""
    port = closed_port()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {
                "name": name,
                "context": {"cluster": "c", "user": "u"} | ({"namespace": ns} if ns else {}),
            }
            for name, ns in namespaces.items()
        ],
    }
    if current:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def resolve(*argv: str) -> Kube:
    return Kube(build_parser().parse_args(["status", "kv", *argv]))


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PLUGIN, *argv], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_options_go_before_or_after_the_command() -> None:
    parser = build_parser()
    a = parser.parse_args(["-n", "shop", "--context", "kind", "status", "kv", "-o", "json"])
    b = parser.parse_args(["status", "kv", "-o", "json", "--context", "kind", "-n", "shop"])
    for args in (a, b):
        assert (args.namespace, args.context, args.output, args.name) == (
            "shop",
            "kind",
            "json",
            "kv",
        )
        assert args.kubeconfig is None and args.request_timeout == 30.0
    c = parser.parse_args(["connect", "kv", "--port", "7100", "--kubeconfig", "/k"])
    assert (c.port, c.kubeconfig, c.output) == (7100, "/k", None)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["status"], "the following arguments are required: NAME"),
        (["status", "kv", "-o", "yaml"], "invalid choice: 'yaml'"),
        (["connect", "kv", "--port", "70000"], "must be a port from 1 to 65535"),
        (["status", "kv", "--request-timeout", "0"], "must be a number of seconds above 0"),
        (["backup", "kv", "--verify", "maybe"], "invalid choice: 'maybe'"),
        (["restore", "kv"], "invalid choice: 'restore'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["status", "--help"], ["connect", "--help"]])
def test_help_on_everything(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "--namespace" in text and "--kubeconfig" in text and "exit codes" in text
    assert "Not here yet: `backup`" in text  # said, not pretended


def test_the_namespace_and_context_are_kubectls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = kubeconfig(tmp_path / "a", "dev", dev="team", prod=None)
    second = kubeconfig(tmp_path / "b", "prod", prod="payments", stage="qa")
    # $KUBECONFIG is read when the command runs (the client fixed its default at import)
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    kube = resolve()
    assert (kube.context, kube.namespace) == ("dev", "team")
    assert resolve("--context", "stage").namespace == "qa"
    assert resolve("--context", "prod").namespace == "default"  # the first "prod" wins
    assert resolve("--context", "stage", "-n", "shop").namespace == "shop"
    assert resolve("--kubeconfig", str(second)).namespace == "payments"
    assert resolve().server.startswith("https://127.0.0.1:")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--kubeconfig", "/nonexistent"], "no kubeconfig at /nonexistent"),
        (["--context", "stage"], "kubeconfig: context 'stage' is not in the kubeconfig"),
        (["-n", "Shop_1"], "namespace 'Shop_1' is not a valid name (a DNS label)"),
    ],
)
def test_config_errors_are_one_line_and_exit_2(tmp_path: Path, argv: list[str], says: str) -> None:
    env = {"KUBECONFIG": str(kubeconfig(tmp_path / "k", "dev", dev=None)), "PATH": "/usr/bin:/bin"}
    r = run("status", "kv", *argv, env=env)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", f"kubectl-ringkv: {says}\n")


def test_no_kubeconfig_at_all(tmp_path: Path) -> None:
    r = run("connect", "kv", env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2
    assert r.stderr == (
        "kubectl-ringkv: no kubeconfig at ~/.kube/config (give --kubeconfig, or set $KUBECONFIG)\n"
    )


def test_an_api_server_that_does_not_answer_is_exit_3(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "k", "dev", dev="shop")
    r = run("status", "kv", "--kubeconfig", str(path), "--request-timeout", "5")
    assert r.returncode == 3 and r.stdout == ""
    assert r.stderr.startswith(
        "kubectl-ringkv: no answer from the API server at https://127.0.0.1:"
    )
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_without_the_kubernetes_client_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # as in a base `pip install ringkv`
    assert main(["status", "kv"]) == 2
    assert capsys.readouterr().err == (
        "kubectl-ringkv: the kubectl plugin needs the kubernetes client: "
        "pip install 'ringkv[kube]'\n"
    )


def test_importing_ringkv_and_its_cli_does_not_import_kubernetes() -> None:
    code = (
        "import sys, ringkv, ringkv.cli; ringkv.cli.build_parser(); "
        "print('kubernetes' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout == "False\n", out.stderr
