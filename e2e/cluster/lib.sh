# shellcheck shell=bash
# Common helpers for e2e/cluster/*.sh: pinned versions, cache paths, Go env.
# Source it; it never changes the caller's shell options beyond `set -euo pipefail`.
set -euo pipefail

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_DIR/../.." && pwd)"
# shellcheck source=versions.env
. "$CLUSTER_DIR/versions.env"

# Everything built or downloaded lives outside the repo, keyed by version.
RINGKV_CACHE="${RINGKV_CACHE:-$HOME/.cache/ringkv}"
K8S_BIN_DIR="${K8S_BIN_DIR:-$RINGKV_CACHE/k8s-$K8S_VERSION/bin}"
TOOLS_DIR="$RINGKV_CACHE/tools"
IMAGES_DIR="$RINGKV_CACHE/images"
mkdir -p "$RINGKV_CACHE"

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Heavy steps yield the CPU to everything else on the machine.
NICE=(nice -n 19)
command -v ionice >/dev/null 2>&1 && NICE+=(ionice -c3)

# go >= 1.21 is needed only to bootstrap: GOTOOLCHAIN makes it fetch the pinned
# toolchain from the module proxy.
find_go() {
  if command -v go >/dev/null 2>&1; then command -v go
  elif [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go
  else die "no go command (need go >= 1.21 on PATH or in /usr/local/go)"; fi
}
# The module proxy is the machine's own (GOPROXY, or `go env`): our files name
# no registry host.
setup_go() {
  GO="$(find_go)"
  local proxy="${GOPROXY:-$(GOTOOLCHAIN=local "$GO" env GOPROXY 2>/dev/null || true)}"
  [ -n "$proxy" ] && [ "$proxy" != off ] \
    || die "no Go module proxy: set GOPROXY (or \`go env -w GOPROXY=...\`) to this machine's proxy"
  export GOPROXY="$proxy" GOTOOLCHAIN="$GO_TOOLCHAIN" CGO_ENABLED=0 GOFLAGS="-trimpath"
}

# sha256 of strings/files, short form, for cache keys and stamps.
hash_of() { sha256sum | cut -c1-16; }

# apt-get install only what is missing (idempotent, quiet when nothing to do).
apt_ensure() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/ringkv-apt.log 2>&1; then
    log "apt-get install failed, retrying after apt-get update"
    apt-get update >/tmp/ringkv-apt.log 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/ringkv-apt.log 2>&1 \
      || { tail -20 /tmp/ringkv-apt.log >&2; die "apt-get install ${missing[*]} failed"; }
  fi
}

# ---- images -----------------------------------------------------------------
# Local images are tagged under this prefix; nothing is ever pushed or pulled.
IMAGE_PREFIX="${IMAGE_PREFIX:-ringkv.local}"

# The Debian mirror is the one this machine's apt uses (DEBIAN_MIRROR overrides):
# our files name no registry host.
debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -z "$uri" ] && uri=$(awk '$1 == "deb" && $3 !~ /security/ {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
  [ -n "$uri" ] || die "no Debian mirror: none in /etc/apt/sources.list or sources.list.d; set DEBIAN_MIRROR"
  echo "$uri"
}

# Prefer Debian's docker CLI (same version as the daemon we start): a newer CLI
# without the buildx plugin prints a deprecation banner for every classic build.
docker() { if [ -x /usr/bin/docker ]; then /usr/bin/docker "$@"; else command docker "$@"; fi; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# debootstrap a minbase rootfs with the given packages and `docker import` it.
#   rootfs_image NAME KEY "pkg,pkg,..." [HOOK]   -> prints the image tag
# HOOK, if given, is a function called with the rootfs dir before packing.
# The image tag is NAME:KEY; the tarball is cached in $IMAGES_DIR.
rootfs_image() {
  local name="$1" key="$2" pkgs="$3" hook="${4:-}"
  local tag="$IMAGE_PREFIX/$name:$key" tar="$IMAGES_DIR/rootfs-$name-$key.tar"
  if image_exists "$tag"; then echo "$tag"; return 0; fi
  mkdir -p "$IMAGES_DIR"
  if [ ! -s "$tar" ]; then
    apt_ensure debootstrap
    local root; root=$(mktemp -d "$RINGKV_CACHE/rootfs-$name.XXXXXX")
    log "debootstrap $DEBIAN_SUITE ($name: $pkgs) from $(debian_mirror)"
    if ! "${NICE[@]}" debootstrap --variant=minbase --include="$pkgs" "$DEBIAN_SUITE" "$root" "$(debian_mirror)" \
         >"$root.log" 2>&1; then
      tail -30 "$root.log" >&2; rm -rf "$root"; die "debootstrap for $name failed (log $root.log)"
    fi
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
           "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/debootstrap
    [ -n "$hook" ] && "$hook" "$root"
    tar --numeric-owner --xattrs -C "$root" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
    rm -rf "$root" "$root.log"
  fi
  log "docker import $tag"
  docker import "$tar" "$tag" >/dev/null
  echo "$tag"
}
