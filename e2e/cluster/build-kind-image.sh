#!/usr/bin/env bash
# Hand-assemble a kind node image offline (kind build node-image always pulls).
#
# What `kind build node-image` does internally, from local parts only:
#   - Kubernetes binaries from build-k8s.sh, etcd/CoreDNS/pause/local-path from build-tools.sh
#   - component images FROM a debootstrapped Debian (build-base-images.sh), tagged exactly
#     as `kubeadm config images list` says, plus local-path provisioner and helper
#   - node rootfs debootstrapped with systemd + Debian containerd/runc/CNI plugins, our
#     entrypoint/units/config (node-image/files), the binaries, /kind/version
#   - images imported into the node's containerd (k8s.io namespace), then `docker commit`
# Tag: $IMAGE_PREFIX/kind-node:$K8S_VERSION-<key>, key = hash of versions + recipe.
# Skips everything when `docker image inspect` finds the tag. Prints KIND_NODE_IMAGE=<tag>.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RECIPE=1  # bump when a change elsewhere (e.g. lib.sh's rootfs_image) should rebuild the image
key="$( { echo "$RECIPE"; cat "$CLUSTER_DIR/versions.env" "$CLUSTER_DIR/build-kind-image.sh" \
          "$CLUSTER_DIR/build-base-images.sh" "$CLUSTER_DIR/gomod/pause/main.go";
          (cd "$CLUSTER_DIR/node-image" && find files -type f | sort | xargs cat); } | hash_of)"
NODE_TAG="$IMAGE_PREFIX/kind-node:$K8S_VERSION-$key"
if image_exists "$NODE_TAG"; then
  log "kind node image $NODE_TAG present"
  echo "KIND_NODE_IMAGE=$NODE_TAG"; exit 0
fi

"$CLUSTER_DIR/dockerd.sh" up
"$CLUSTER_DIR/build-k8s.sh" all
"$CLUSTER_DIR/build-tools.sh" etcd coredns local-path-provisioner pause
eval "$("$CLUSTER_DIR/build-base-images.sh" debian-min)"   # -> DEBIAN_MIN

T="$RINGKV_CACHE/tools"
KB="$K8S_BIN_DIR"
LOCAL_PATH_IMAGE="$IMAGE_PREFIX/local-path-provisioner:$LOCAL_PATH_PROVISIONER_VERSION"
HELPER_IMAGE="$IMAGE_PREFIX/local-path-helper:${DEBIAN_MIN##*:}"
work=$(mktemp -d "$RINGKV_CACHE/kind-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# ---- component images ----------------------------------------------------------
"$KB/kubeadm" config images list --kubernetes-version "$K8S_VERSION" >"$work/images.txt"
log "kubeadm wants: $(tr '\n' ' ' <"$work/images.txt")"

build_image() {  # build_image TAG FROM BIN DEST [ENTRYPOINT-JSON] [USER]
  local tag="$1" from="$2" bin="$3" dest="$4" ep="${5:-}" user="${6:-}" d
  d=$(mktemp -d "$work/img.XXXXXX")
  cp "$bin" "$d/bin"
  { echo "FROM $from"; echo "COPY bin $dest"
    [ -n "$user" ] && echo "USER $user"
    [ -n "$ep" ] && echo "ENTRYPOINT $ep"; true; } >"$d/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$d" >/dev/null
}
all_images=()
while read -r img; do
  name="${img%:*}"; name="${name##*/}"
  case "$name" in
    kube-apiserver|kube-controller-manager|kube-scheduler|kube-proxy)
      build_image "$img" "$DEBIAN_MIN" "$KB/$name" "/usr/local/bin/$name" ;;
    etcd)    build_image "$img" "$DEBIAN_MIN" "$T/etcd-$ETCD_VERSION/etcd" /usr/local/bin/etcd ;;
    coredns) build_image "$img" "$DEBIAN_MIN" "$T/coredns-$COREDNS_VERSION/coredns" /coredns '["/coredns"]' ;;
    pause)   build_image "$img" scratch "$T/pause-$PAUSE_VERSION/pause" /pause '["/pause"]' 65535:65535 ;;
    *) die "kubeadm wants $img, which this recipe does not know how to build" ;;
  esac
  all_images+=("$img")
done <"$work/images.txt"
grep -q "registry.k8s.io/pause:$PAUSE_VERSION\$" "$work/images.txt" \
  || die "kubeadm's pause is not $PAUSE_VERSION: update PAUSE_VERSION and node-image/files/etc/containerd/config.toml"
grep -q "registry.k8s.io/etcd:$ETCD_IMAGE_TAG\$" "$work/images.txt" \
  || die "kubeadm's etcd tag is not $ETCD_IMAGE_TAG: update ETCD_VERSION/ETCD_IMAGE_TAG"
build_image "$LOCAL_PATH_IMAGE" "$DEBIAN_MIN" "$T/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION/local-path-provisioner" \
  /usr/local/bin/local-path-provisioner
docker tag "$DEBIAN_MIN" "$HELPER_IMAGE"
all_images+=("$LOCAL_PATH_IMAGE" "$HELPER_IMAGE")
log "saving ${#all_images[@]} images"
docker save -o "$work/images.tar" "${all_images[@]}"

# ---- node rootfs ---------------------------------------------------------------
NODE_PKGS="systemd,dbus,bash,ca-certificates,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,jq,procps,containerd,runc,containernetworking-plugins"
node_hook() {
  local r="$1"
  # our files: scripts 0755, the rest 0644
  (cd "$CLUSTER_DIR/node-image/files" && find . -type f) | while read -r f; do
    install -D -m 0644 "$CLUSTER_DIR/node-image/files/$f" "$r/$f"
  done
  chmod 0755 "$r/usr/local/bin/entrypoint"
  sed -i "s|@LOCAL_PATH_IMAGE@|$LOCAL_PATH_IMAGE|; s|@HELPER_IMAGE@|$HELPER_IMAGE|g" "$r/kind/manifests/default-storage.yaml"
  # Where CAP_SYS_RESOURCE is missing, negative oom_score_adj fails: clamp it.
  local restrict=false
  (( (0x$(awk '/^CapBnd:/ {print $2}' /proc/self/status) >> 24 & 1) == 0 )) && restrict=true
  sed -i "s/RESTRICT_OOM_SCORE_ADJ/$restrict/" "$r/etc/containerd/config.toml"
  # systemd in a container: only what a node needs starts.
  rm -f "$r"/lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service \
        "$r"/lib/systemd/system/multi-user.target.wants/* "$r"/etc/systemd/system/*.wants/* \
        "$r"/lib/systemd/system/local-fs.target.wants/* "$r"/lib/systemd/system/sockets.target.wants/*udev* \
        "$r"/lib/systemd/system/sockets.target.wants/*initctl* "$r"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >>"$r/etc/systemd/journald.conf"
  ln -sf /lib/systemd/systemd "$r/sbin/init"
  mkdir -p "$r/etc/systemd/system/multi-user.target.wants" "$r/etc/kubernetes/manifests" "$r/opt/cni/bin"
  for u in containerd kubelet; do
    ln -sf "/etc/systemd/system/$u.service" "$r/etc/systemd/system/multi-user.target.wants/$u.service"
  done
  ln -sf /dev/null "$r/etc/systemd/system/systemd-binfmt.service"
  for p in "$r"/usr/lib/cni/*; do ln -sf "/usr/lib/cni/${p##*/}" "$r/opt/cni/bin/"; done
  # binaries
  install -m 0755 "$KB/kubeadm" "$KB/kubelet" "$KB/kubectl" "$r/usr/bin/"
  for b in containerd ctr containerd-shim-runc-v2; do ln -sf "/usr/bin/$b" "$r/usr/local/bin/$b"; done
  echo "$K8S_VERSION" >"$r/kind/version"
  # CRI base spec: containerd's default minus rlimits (pods get the node's limits).
  chroot "$r" ctr oci spec | jq 'del(.process.rlimits)' >"$r/etc/containerd/cri-base.json"
}
node_key="$DEBIAN_SUITE-$(echo "$key" | hash_of)"
base_tag=$(rootfs_image kind-node-base "$node_key" "$NODE_PKGS" node_hook)
log "node base $base_tag"

# docker import cannot set STOPSIGNAL; a two-line build can (systemd stops on SIGRTMIN+3).
printf 'FROM %s\nENV container=docker\nSTOPSIGNAL SIGRTMIN+3\nENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]\n' "$base_tag" \
  | DOCKER_BUILDKIT=0 docker build -q -t "$base_tag-2" - >/dev/null

# ---- preload images into the node's containerd, then commit ------------------------
cid=$(docker run -d --privileged --entrypoint=sleep "$base_tag-2" infinity)
trap 'docker rm -f "$cid" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
docker cp "$work/images.tar" "$cid:/images.tar"
docker exec "$cid" bash -euc '
  (containerd >/var/log/containerd-preload.log 2>&1 &)
  for _ in $(seq 60); do ctr version >/dev/null 2>&1 && break; sleep 0.5; done
  ctr --namespace=k8s.io images import --all-platforms --no-unpack --digests /images.tar >/dev/null
  ctr --namespace=k8s.io images ls -q
  pkill containerd; for _ in $(seq 30); do pgrep containerd >/dev/null || break; sleep 0.5; done
  rm -f /images.tar /var/log/containerd-preload.log' >"$work/loaded.txt"
for img in "${all_images[@]}"; do
  grep -qx "$img" "$work/loaded.txt" || grep -qx "docker.io/$img" "$work/loaded.txt" \
    || die "$img missing from the node's containerd after import"
done
docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' --change 'CMD []' \
  "$cid" "$NODE_TAG" >/dev/null
log "built $NODE_TAG"
# Older recipes' images only take disk; ones a container still uses are kept (rm fails).
for old in $(docker images --format '{{.Repository}}:{{.Tag}}' "$IMAGE_PREFIX/kind-node" "$IMAGE_PREFIX/kind-node-base"); do
  case "$old" in "$NODE_TAG" | "$base_tag" | "$base_tag-2") ;; *) docker image rm "$old" >/dev/null 2>&1 || true ;; esac
done
rm -f "$IMAGES_DIR"/rootfs-kind-node-base-*.tar.tmp
echo "KIND_NODE_IMAGE=$NODE_TAG"
