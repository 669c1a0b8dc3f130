#!/usr/bin/env bash
# kind cluster for tier 4.
#
#   kind-up.sh up      create $KIND_CLUSTER unless it exists (dockerd started if needed)
#   kind-up.sh down    delete it
#   kind-up.sh load    kind load docker-image $NODE_IMAGE $OPERATOR_IMAGE $S3_IMAGE (and $EXTRA_IMAGES)
#   kind-up.sh env     print KUBECONFIG=... and KIND=...
#
# KIND_NODE_IMAGE empty (default): the offline node image from build-kind-image.sh,
# with our static CNI (networking.disableDefaultCNI). Set it to a pullable image
# such as kindest/node:v1.32.2 on a machine that reaches a registry: stock kind.
# The kubeconfig is written to $RINGKV_CACHE/kind/$KIND_CLUSTER.kubeconfig.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KIND_CLUSTER="${KIND_CLUSTER:-ringkv-e2e}"
NODE_IMAGE="${NODE_IMAGE:-ringkv/node:e2e}"
OPERATOR_IMAGE="${OPERATOR_IMAGE:-ringkv/operator:e2e}"
S3_IMAGE="${S3_IMAGE:-ringkv/s3:e2e}"
STATE="$RINGKV_CACHE/kind"
KUBECONFIG_OUT="$STATE/$KIND_CLUSTER.kubeconfig"
KIND="$RINGKV_CACHE/bin/kind"
mkdir -p "$STATE"

cluster_exists() { "$KIND" get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; }

create() {  # create IMAGE OFFLINE
  local image="$1" offline="$2" cfg="$STATE/$KIND_CLUSTER.yaml"
  {
    echo "kind: Cluster"
    echo "apiVersion: kind.x-k8s.io/v1alpha4"
    if $offline; then
      echo "networking:"
      echo "  disableDefaultCNI: true   # the node image carries a static ptp CNI config"
    fi
    echo "nodes:"
    echo "- role: control-plane"
  } >"$cfg"
  log "kind create cluster $KIND_CLUSTER ($image)"
  if ! "$KIND" create cluster --name "$KIND_CLUSTER" --image "$image" --config "$cfg" \
       --kubeconfig "$KUBECONFIG_OUT" --wait 240s; then
    "$KIND" export logs --name "$KIND_CLUSTER" "$STATE/logs-$KIND_CLUSTER" >/dev/null 2>&1 || true
    die "kind create cluster failed; logs in $STATE/logs-$KIND_CLUSTER (delete with: $0 down)"
  fi
}

# The node must be Ready, CoreDNS and the storage provisioner rolled out.
# kubectl gives up at once while the API server is still starting: retry.
ready() {  # ready OFFLINE SECONDS
  local kc=("$K8S_BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_OUT") deadline=$((SECONDS + $2))
  while [ $SECONDS -lt $deadline ]; do
    if "${kc[@]}" wait --for=condition=Ready node --all --timeout=20s >/dev/null 2>&1 &&
       "${kc[@]}" -n kube-system rollout status deploy/coredns --timeout=20s >/dev/null 2>&1 &&
       { ! $1 || "${kc[@]}" -n local-path-storage rollout status deploy/local-path-provisioner \
            --timeout=20s >/dev/null 2>&1; }; then
      return 0
    fi
    sleep 2
  done
  return 1
}

up() {
  "$CLUSTER_DIR/dockerd.sh" up
  "$CLUSTER_DIR/build-tools.sh" kind
  "$CLUSTER_DIR/build-k8s.sh" kubectl
  local image="${KIND_NODE_IMAGE:-}" offline=false
  if [ -z "$image" ]; then
    eval "$("$CLUSTER_DIR/build-kind-image.sh")"   # -> KIND_NODE_IMAGE
    image="$KIND_NODE_IMAGE"; offline=true
  fi
  local node="$KIND_CLUSTER-control-plane"
  if cluster_exists && [ "$(docker inspect -f '{{.Config.Image}}' "$node" 2>/dev/null)" != "$image" ]; then
    log "cluster $KIND_CLUSTER runs $(docker inspect -f '{{.Config.Image}}' "$node" 2>/dev/null), not $image: recreating it"
    "$KIND" delete cluster --name "$KIND_CLUSTER"
  fi
  if cluster_exists; then
    if [ "$(docker inspect -f '{{.State.Running}}' "$node" 2>/dev/null)" != true ]; then
      log "cluster $KIND_CLUSTER exists but $node is not running: starting it"
      docker start "$node" >/dev/null || true
    fi
    "$KIND" get kubeconfig --name "$KIND_CLUSTER" >"$KUBECONFIG_OUT" 2>/dev/null || true
    if ! ready "$offline" 150; then
      log "cluster $KIND_CLUSTER does not come back: recreating it"
      "$KIND" delete cluster --name "$KIND_CLUSTER"
      create "$image" "$offline"
    fi
  else
    create "$image" "$offline"
  fi
  ready "$offline" 180 || die "cluster $KIND_CLUSTER not ready (make kind-down kind-up recreates it)"
  log "cluster $KIND_CLUSTER ready; export KUBECONFIG=$KUBECONFIG_OUT"
}

case "${1:-up}" in
  up) up ;;
  down)
    if [ -x "$KIND" ] && cluster_exists; then "$KIND" delete cluster --name "$KIND_CLUSTER"; fi
    rm -f "$KUBECONFIG_OUT" ;;
  load)
    cluster_exists || die "no cluster $KIND_CLUSTER (make kind-up)"
    # shellcheck disable=SC2086
    "$KIND" load docker-image --name "$KIND_CLUSTER" "$NODE_IMAGE" "$OPERATOR_IMAGE" "$S3_IMAGE" ${EXTRA_IMAGES:-} ;;
  env) echo "KUBECONFIG=$KUBECONFIG_OUT"; echo "KIND=$KIND"; echo "KUBECTL=$K8S_BIN_DIR/kubectl" ;;
  *) die "usage: $0 up|down|load|env" ;;
esac
