#!/usr/bin/env bash
# Build Kubernetes commands (k8s.io/kubernetes/cmd/<name>) at $K8S_VERSION from
# the Go module proxy through the wrapper module in gomod/k8s, into $K8S_BIN_DIR.
#
#   build-k8s.sh kube-apiserver kube-controller-manager   # what tier 3 needs
#   build-k8s.sh all                                      # + scheduler, proxy, kubelet, kubeadm, kubectl
#
# Idempotent: a binary whose stamp matches the recipe (version, toolchain,
# ldflags, go.sum) is skipped, so a warm run takes well under a second.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubeadm kubectl)
[ $# -eq 0 ] && set -- kube-apiserver kube-controller-manager
[ "$1" = all ] && set -- "${ALL[@]}"

MOD="$CLUSTER_DIR/gomod/k8s"
ver="${K8S_VERSION#v}"; major="${ver%%.*}"; minor="${ver#*.}"; minor="${minor%%.*}"
# hack/lib/version.sh writes both packages; kubeadm derives its version
# constraints from component-base/version, so these are required.
# A fixed build date keeps the link reproducible (and the Go cache warm).
LD="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LD="$LD -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  LD="$LD -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.buildDate=1970-01-01T00:00:00Z"
done
stamp="$( { echo "$K8S_VERSION $GO_TOOLCHAIN $LD"; cat "$MOD/go.mod" "$MOD/go.sum"; } | hash_of)"

mkdir -p "$K8S_BIN_DIR"
todo=()
for c in "$@"; do
  if [ -x "$K8S_BIN_DIR/$c" ] && [ "$(cat "$K8S_BIN_DIR/.$c.stamp" 2>/dev/null)" = "$stamp" ]; then
    continue
  fi
  todo+=("$c")
done
if [ ${#todo[@]} -eq 0 ]; then
  log "k8s $K8S_VERSION: up to date in $K8S_BIN_DIR ($*)"
  exit 0
fi

setup_go
log "k8s $K8S_VERSION: building ${todo[*]} with $GO_TOOLCHAIN (niced) into $K8S_BIN_DIR"
start=$SECONDS
pkgs=(); for c in "${todo[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
# A single `go build` of several commands shares the compilation of their common deps.
(cd "$MOD" && "${NICE[@]}" "$GO" build -p "${GO_BUILD_P:-2}" -ldflags "$LD" -o "$K8S_BIN_DIR/" "${pkgs[@]}")
for c in "${todo[@]}"; do
  case "$c" in
    kubeadm) check=(version -o short) ;;
    kubectl) check=(version --client) ;;
    *) check=(--version) ;;
  esac
  "$K8S_BIN_DIR/$c" "${check[@]}" >/dev/null 2>&1 || die "$c built but does not run"
  echo "$stamp" > "$K8S_BIN_DIR/.$c.stamp"
done
log "k8s $K8S_VERSION: built ${todo[*]} in $((SECONDS - start)) s"
