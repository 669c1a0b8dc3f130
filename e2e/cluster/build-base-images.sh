#!/usr/bin/env bash
# Base images debootstrapped from Debian (no registry needed):
#   $IMAGE_PREFIX/debian-min:<key>   minbase + iptables/nft/conntrack/iproute2: kube-proxy,
#                                    control-plane and helper images in the kind node
#   $IMAGE_PREFIX/python:<key>       minbase + python3 (3.11) + venv: FROM of node/operator images
# Prints "DEBIAN_MIN=<tag>" and "PYTHON_BASE=<tag>". Skips what `docker image inspect` finds.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RECIPE=1  # bump when the recipe below changes
MIN_PKGS="ca-certificates,iptables,nftables,conntrack,iproute2,kmod,procps"
PY_PKGS="ca-certificates,python3,python3-venv,tzdata"

min_key="$DEBIAN_SUITE-$(echo "$RECIPE $DEBIAN_SUITE $MIN_PKGS" | hash_of)"
py_key="3.11-$DEBIAN_SUITE-$(echo "$RECIPE $DEBIAN_SUITE $PY_PKGS" | hash_of)"

what="${1:-all}"
if [ "$what" = all ] || [ "$what" = debian-min ]; then
  echo "DEBIAN_MIN=$(rootfs_image debian-min "$min_key" "$MIN_PKGS")"
fi
if [ "$what" = all ] || [ "$what" = python ]; then
  echo "PYTHON_BASE=$(rootfs_image python "$py_key" "$PY_PKGS")"
fi
