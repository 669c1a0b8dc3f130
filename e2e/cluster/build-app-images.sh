#!/usr/bin/env bash
# Our component images, without a registry:
#   1. the Python base debootstrapped from Debian (build-base-images.sh python),
#      unless PYTHON_BASE names another image (e.g. python:3.11-slim where pullable);
#   2. a wheelhouse in build/wheels: `pip wheel ./client ./node` on the host,
#      which reaches PyPI, so the docker build itself needs no network;
#   3. node/Dockerfile FROM that base -> $NODE_IMAGE (default ringkv/node:e2e),
#      operator/Dockerfile -> $OPERATOR_IMAGE (default ringkv/operator:e2e), and
#      e2e/images/s3/Dockerfile -> $S3_IMAGE (default ringkv/s3:e2e): moto's S3
#      server, the e2e tests' S3-compatible destination.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NODE_IMAGE="${NODE_IMAGE:-ringkv/node:e2e}"
OPERATOR_IMAGE="${OPERATOR_IMAGE:-ringkv/operator:e2e}"
S3_IMAGE="${S3_IMAGE:-ringkv/s3:e2e}"
MOTO="moto[server]==$(sed -n 's/^moto\[server\]==//p' "$REPO_ROOT/requirements-dev.txt")"
"$CLUSTER_DIR/dockerd.sh" up
if [ -z "${PYTHON_BASE:-}" ]; then
  eval "$("$CLUSTER_DIR/build-base-images.sh" python)"   # -> PYTHON_BASE
fi

PYBIN="${PYBIN:-$REPO_ROOT/.venv/bin/python}"
[ -x "$PYBIN" ] || PYBIN=python3
WHEELS="$REPO_ROOT/build/wheels"
mkdir -p "$WHEELS"
rm -f "$WHEELS"/ringkv-*.whl "$WHEELS"/ringkv_node-*.whl "$WHEELS"/ringkv_operator-*.whl   # ours are rebuilt every time
log "pip wheel ./client[s3] ./node ./operator $MOTO -> build/wheels"
# Offline first, from the wheelhouse of an earlier run (it also holds setuptools for
# the isolated build); on a cold machine or with new dependencies, ask PyPI.
if ! "$PYBIN" -m pip wheel -q --no-index --find-links "$WHEELS" --wheel-dir "$WHEELS" \
       "$REPO_ROOT/client[s3]" "$REPO_ROOT/node" "$REPO_ROOT/operator" "$MOTO" >"$RINGKV_CACHE/pip-wheel.log" 2>&1; then
  "$PYBIN" -m pip wheel -q --wheel-dir "$WHEELS" "$REPO_ROOT/client[s3]" "$REPO_ROOT/node" "$REPO_ROOT/operator" \
    "$MOTO" "setuptools>=68" >"$RINGKV_CACHE/pip-wheel.log" 2>&1 \
    || { tail -30 "$RINGKV_CACHE/pip-wheel.log" >&2; die "pip wheel failed"; }
fi

log "docker build $NODE_IMAGE FROM $PYTHON_BASE"
DOCKER_BUILDKIT=0 docker build --build-arg "BASE=$PYTHON_BASE" -f "$REPO_ROOT/node/Dockerfile" \
  -t "$NODE_IMAGE" "$REPO_ROOT" >"$RINGKV_CACHE/node-image-build.log" 2>&1 \
  || { tail -30 "$RINGKV_CACHE/node-image-build.log" >&2; die "docker build of $NODE_IMAGE failed"; }
log "docker build $OPERATOR_IMAGE FROM $PYTHON_BASE"
DOCKER_BUILDKIT=0 docker build --build-arg "BASE=$PYTHON_BASE" -f "$REPO_ROOT/operator/Dockerfile" \
  -t "$OPERATOR_IMAGE" "$REPO_ROOT" >"$RINGKV_CACHE/operator-image-build.log" 2>&1 \
  || { tail -30 "$RINGKV_CACHE/operator-image-build.log" >&2; die "docker build of $OPERATOR_IMAGE failed"; }
log "docker build $S3_IMAGE FROM $PYTHON_BASE"
DOCKER_BUILDKIT=0 docker build --build-arg "BASE=$PYTHON_BASE" --build-arg "MOTO=$MOTO" \
  -f "$REPO_ROOT/e2e/images/s3/Dockerfile" -t "$S3_IMAGE" "$REPO_ROOT" >"$RINGKV_CACHE/s3-image-build.log" 2>&1 \
  || { tail -30 "$RINGKV_CACHE/s3-image-build.log" >&2; die "docker build of $S3_IMAGE failed"; }
echo "NODE_IMAGE=$NODE_IMAGE"
echo "OPERATOR_IMAGE=$OPERATOR_IMAGE"
echo "S3_IMAGE=$S3_IMAGE"
