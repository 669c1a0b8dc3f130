#!/usr/bin/env bash
# Create the virtualenv and install what the project needs, on a fresh
# Debian 12 machine too: installs python3-venv from Debian when venv is missing.
#   bootstrap.sh run   ringkv and ringkv-node only (what `make run` needs)
#   bootstrap.sh dev   and the lint, test and e2e tools (the default)
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
MODE=${1:-dev}
case "$MODE" in run|dev) ;; *) echo "bootstrap: mode must be run or dev, not $MODE" >&2; exit 2;; esac

apt_install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
    else
        echo "bootstrap: please install: $*" >&2
        return 1
    fi
}

command -v "$PYTHON" >/dev/null || apt_install python3
"$PYTHON" - <<'PY' || { echo "bootstrap: ringkv needs Python >= 3.11 ($PYTHON)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV"
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        apt_install python3-venv
        "$PYTHON" -m venv "$VENV"
    fi
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -U pip
pkgs=(-e client -e node)
reqs=()
if [ "$MODE" = dev ]; then
    pkgs+=(-e operator)
    reqs+=(-r requirements-dev.txt)
    [ -f e2e/requirements.txt ] && reqs+=(-r e2e/requirements.txt)
fi
echo "bootstrap: pip install ${pkgs[*]}${reqs[*]:+ ${reqs[*]}}"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${pkgs[@]}" "${reqs[@]}"
echo "bootstrap: done"
