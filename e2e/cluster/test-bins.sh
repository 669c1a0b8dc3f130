#!/usr/bin/env bash
# What tier 3 (e2e/kubeharness) needs, and nothing more: etcd from Debian
# (etcd-server 3.4.23) and kube-apiserver + kube-controller-manager built from
# the Go module proxy. Cold: ~1 min of module downloads + ~7 min of building
# on 2 cores; warm: well under a second.
# If KUBEBUILDER_ASSETS names a directory holding etcd and kube-apiserver
# (setup-envtest's layout), the tests use those and the build is skipped.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]; then
  log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  [ -x "$KUBEBUILDER_ASSETS/kube-controller-manager" ] && exit 0
  log "(no kube-controller-manager there: building it)"
  exec "$CLUSTER_DIR/build-k8s.sh" kube-controller-manager
fi
command -v etcd >/dev/null 2>&1 || apt_ensure etcd-server
command -v openssl >/dev/null 2>&1 || apt_ensure openssl
"$CLUSTER_DIR/build-k8s.sh" kube-apiserver kube-controller-manager
