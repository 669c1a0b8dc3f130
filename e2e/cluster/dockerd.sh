#!/usr/bin/env bash
# Make sure a Docker daemon is running for kind and the image builds.
#
#   dockerd.sh up       install docker.io if needed; start dockerd unless one answers
#   dockerd.sh down     stop the dockerd this script started
#   dockerd.sh status
#
# Our machines have no systemd as PID 1, so nothing starts dockerd for us.
# When the capability bounding set lacks CAP_SYS_RESOURCE, dockerd gets the
# runc-nosr wrapper as its default runtime (see runc-nosr); this is detected,
# not assumed. One dockerd per host: a second one would delete docker0.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STATE="$RINGKV_CACHE/dockerd"
PIDFILE=/var/run/docker.pid
mkdir -p "$STATE"

cap_sys_resource_missing() {
  local bnd; bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  (( (0x$bnd >> 24 & 1) == 0 ))
}

docker_ok() { timeout 10 docker info >/dev/null 2>&1; }

runtime_ok() {
  # Where the wrapper is needed, the running daemon must use it by default.
  cap_sys_resource_missing || return 0
  [ "$(timeout 10 docker info --format '{{.DefaultRuntime}}' 2>/dev/null)" = runc-nosr ]
}

up() {
  apt_ensure docker.io jq iptables
  if docker_ok; then
    runtime_ok || die "a dockerd is running without the runc-nosr default runtime, but this host lacks CAP_SYS_RESOURCE: privileged containers (kind nodes) will fail. Stop it (dockerd.sh down, or kill it) and rerun."
    log "dockerd already running"
    return 0
  fi
  local cfg="$STATE/daemon.json"
  if cap_sys_resource_missing; then
    install -m0755 "$CLUSTER_DIR/runc-nosr" "$STATE/runc-nosr"
    log "CAP_SYS_RESOURCE missing from the bounding set: default runtime runc-nosr"
    printf '{\n  "runtimes": {"runc-nosr": {"path": "%s"}},\n  "default-runtime": "runc-nosr"\n}\n' "$STATE/runc-nosr" >"$cfg"
  else
    echo '{}' >"$cfg"
  fi
  # A stale pidfile or socket from a killed daemon would stop dockerd starting.
  if [ -f "$PIDFILE" ] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then rm -f "$PIDFILE"; fi
  log "starting dockerd (log $STATE/dockerd.log)"
  # Without the descriptors this script inherited beyond 0-2: a lock a caller
  # holds (`flock LOCK make e2e`) must not live on in the daemon.
  (
    for fd in /proc/self/fd/*; do
      fd="${fd##*/}"
      [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
    done
    exec nohup setsid dockerd --config-file "$cfg" --pidfile "$PIDFILE" >>"$STATE/dockerd.log" 2>&1 </dev/null
  ) &
  for _ in $(seq 60); do
    docker_ok && { log "dockerd up"; return 0; }
    sleep 1
  done
  tail -30 "$STATE/dockerd.log" >&2
  die "dockerd did not come up in 60 s"
}

down() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    local pid; pid=$(cat "$PIDFILE")
    kill "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    log "dockerd stopped"
  else
    log "dockerd not running (no live $PIDFILE)"
  fi
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) docker_ok && runtime_ok && echo "dockerd up ($(docker info --format '{{.DefaultRuntime}}'))" || { echo down; exit 1; } ;;
  *) die "usage: $0 up|down|status" ;;
esac
