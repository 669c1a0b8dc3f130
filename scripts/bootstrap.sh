#!/usr/bin/env bash
# Create the virtualenv and install everything the project needs, on a fresh
# Debian 12 machine too: installs python3-venv from Debian when venv is missing.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

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
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        apt_install python3-venv
        "$PYTHON" -m venv "$VENV"
    fi
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -U pip
reqs=(-r requirements-dev.txt)
[ -f e2e/requirements.txt ] && reqs+=(-r e2e/requirements.txt)
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e client -e node -e operator "${reqs[@]}"
