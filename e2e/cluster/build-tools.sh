#!/usr/bin/env bash
# Build the non-Kubernetes Go tools of the pinned versions from the Go module
# proxy into $RINGKV_CACHE/tools/<name>-<version>/<name>, and link them from
# $RINGKV_CACHE/bin. Idempotent: existing binaries with a matching stamp are kept.
#
#   build-tools.sh [kind] [helm] [etcd] [coredns] [local-path-provisioner] [pause]
#   build-tools.sh all
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL=(kind helm etcd coredns local-path-provisioner pause)
[ $# -eq 0 ] || [ "$1" = all ] && set -- "${ALL[@]}"
BIN_LINKS="$RINGKV_CACHE/bin"
mkdir -p "$BIN_LINKS"

# name -> "version|toolchain|how" where how is `install <pkg>` or `wrapper <dir> <pkg>`
recipe() {
  case "$1" in
    kind)   echo "$KIND_VERSION|$GO_TOOLCHAIN|install sigs.k8s.io/kind@$KIND_VERSION|" ;;
    helm)   echo "$HELM_VERSION|$GO_TOOLCHAIN|wrapper helm helm.sh/helm/v3/cmd/helm|-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" ;;
    etcd)   echo "$ETCD_VERSION|$GO_TOOLCHAIN|wrapper etcd go.etcd.io/etcd/server/v3|" ;;
    coredns) echo "$COREDNS_VERSION|$COREDNS_GO_TOOLCHAIN|install github.com/coredns/coredns@$COREDNS_VERSION|" ;;
    local-path-provisioner) echo "$LOCAL_PATH_PROVISIONER_VERSION|$GO_TOOLCHAIN|install github.com/rancher/local-path-provisioner@$LOCAL_PATH_PROVISIONER_VERSION|-X main.VERSION=$LOCAL_PATH_PROVISIONER_VERSION" ;;
    pause)  echo "$PAUSE_VERSION|$GO_TOOLCHAIN|wrapper pause ringkv.local/e2e/pause|-X main.version=$PAUSE_VERSION-ringkv" ;;
    *) die "unknown tool $1" ;;
  esac
}

setup_go
for name in "$@"; do
  IFS='|' read -r version toolchain how ldx <<<"$(recipe "$name")"
  dir="$TOOLS_DIR/$name-$version"; out="$dir/$name"
  read -r kind arg1 arg2 <<<"$how"
  stamp="$( { echo "$version $toolchain $how $ldx"
              if [ "$kind" = wrapper ]; then cat "$CLUSTER_DIR/gomod/$arg1"/*; fi; } | hash_of)"
  if [ -x "$out" ] && [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$stamp" ]; then
    ln -sfn "$out" "$BIN_LINKS/$name"; continue
  fi
  mkdir -p "$dir"; start=$SECONDS
  log "building $name $version ($toolchain, niced)"
  case "$kind" in
    install) GOTOOLCHAIN="$toolchain" GOBIN="$dir" "${NICE[@]}" "$GO" install -ldflags "-s -w $ldx" "$arg1" ;;
    wrapper) (cd "$CLUSTER_DIR/gomod/$arg1" && GOTOOLCHAIN="$toolchain" "${NICE[@]}" "$GO" build -ldflags "-s -w $ldx" -o "$out" "$arg2") ;;
  esac
  # go install names the binary after the package's last element.
  if [ ! -x "$out" ]; then
    b=$(find "$dir" -maxdepth 1 -type f -perm -u+x ! -name '.*' | head -1)
    if [ -n "$b" ]; then mv "$b" "$out"; fi
  fi
  [ -x "$out" ] || die "$name: no binary in $dir"
  echo "$stamp" >"$dir/.stamp"
  ln -sfn "$out" "$BIN_LINKS/$name"
  log "built $name in $((SECONDS - start)) s"
done
