#!/usr/bin/env bash
# A 3-node ringkv cluster (N=3, W=R=2, fsync) vs a 3-member etcd, in the same run.
#
# Both run on this machine's cores with the load; wrk drives each system with
# 64 connections spread over its 3 members (one wrk per member), 100-byte
# values to random keys among $KEYS. etcd is Debian's etcd-server through its
# HTTP/JSON gateway (/v3/kv/put and /v3/kv/range, linearizable reads).
# Prints ops/s, p50/p99 (the worst of the three wrk processes) and the ratios.
#
#   bash bench/cluster.sh            # DURATION=10 CONNS=64 KEYS=100000
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
export KEYS=${KEYS:-100000}
VENV=${VENV:-.venv}
BASE=${BASE_PORT:-17200}
TOKEN=bench-token

source bench/lib.sh
need wrk etcd-server curl
bench_workdir ringkv-cluster-bench

# run_wrk MODE URL... -> "ops p50 p99" (ops summed, latencies the worst)
run_wrk() {
    local mode=$1; shift
    local n=$# i=0 per=$((CONNS / $#)) extra=$((CONNS % $#))
    for url in "$@"; do
        local c=$per
        [ $i -lt $extra ] && c=$((c + 1))
        MODE=$mode wrk -t1 -c"$c" -d"${DURATION}s" -H "Authorization: Bearer $TOKEN" \
            -s "$WORK/multi.lua" "$url" >"$WORK/wrk-$mode-$i.txt" 2>&1 &
        i=$((i + 1))
    done
    wait $(jobs -p | tail -n "$n") 2>/dev/null || true
    local errors
    errors=$(cat "$WORK"/wrk-"$mode"-*.txt | awk -F'errors=' '/^RESULT/ {split($2, a, " "); s += a[1]} END {print s + 0}')
    [ "$errors" = 0 ] || echo "warning: $mode saw $errors non-2xx/socket errors" >&2
    cat "$WORK"/wrk-"$mode"-*.txt | awk '/^RESULT/ {
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        ops += v["ops"]; if (v["p50_ms"] > p50) p50 = v["p50_ms"]; if (v["p99_ms"] > p99) p99 = v["p99_ms"]
    } END { printf "%.0f %.3f %.3f\n", ops, p50, p99 }'
}

# wrk takes one script: append the reporter
cat bench/wrk/multi.lua bench/wrk/report.lua >"$WORK/multi.lua"

# -- ringkv: 3 nodes, N=3, quorum, fsync -------------------------------------------
PEERS=""
for i in 0 1 2; do PEERS="$PEERS${PEERS:+,}n$i=http://127.0.0.1:$((BASE + i))"; done
URLS=()
for i in 0 1 2; do
    "$VENV/bin/ringkv-node" --id "n$i" --listen "127.0.0.1:$((BASE + i))" \
        --advertise-url "http://127.0.0.1:$((BASE + i))" --peers "$PEERS" --token "$TOKEN" \
        --data-dir "$WORK/n$i" --durability fsync --log-level warning >"$WORK/n$i.log" 2>&1 &
    PIDS+=($!)
    URLS+=("http://127.0.0.1:$((BASE + i))")
done
for u in "${URLS[@]}"; do wait_http "$u/readyz"; done
read -r K_PUT K_PUT50 K_PUT99 < <(run_wrk ringkv-put "${URLS[@]}")
"$VENV/bin/python" bench/prefill.py "${URLS[0]}" "$KEYS" "$TOKEN"
# Every node holds every key (N=3 on 3 nodes) once the load is acknowledged;
# a node far behind would make the GET run measure its catch-up instead.
ENTRIES=()
for u in "${URLS[@]}"; do
    ENTRIES+=("$(curl -fsS -H "Authorization: Bearer $TOKEN" "$u/v1/status" |
        "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["storage"]["entries"])')")
done
echo "keys per node after the prefill: ${ENTRIES[*]} (of $KEYS)" >&2
for e in "${ENTRIES[@]}"; do
    [ "$e" -ge $((KEYS * 99 / 100)) ] || echo "warning: a node holds $e of $KEYS keys: GET runs during its catch-up" >&2
done
read -r K_GET K_GET50 K_GET99 < <(run_wrk ringkv-get "${URLS[@]}")
for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()

# -- etcd: 3 members -------------------------------------------------------------------
CLUSTER=""
for i in 0 1 2; do CLUSTER="$CLUSTER${CLUSTER:+,}e$i=http://127.0.0.1:$((BASE + 20 + i))"; done
EURLS=()
for i in 0 1 2; do
    etcd --name "e$i" --data-dir "$WORK/e$i" \
        --listen-client-urls "http://127.0.0.1:$((BASE + 10 + i))" \
        --advertise-client-urls "http://127.0.0.1:$((BASE + 10 + i))" \
        --listen-peer-urls "http://127.0.0.1:$((BASE + 20 + i))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((BASE + 20 + i))" \
        --initial-cluster "$CLUSTER" --initial-cluster-state new \
        --log-level error >"$WORK/e$i.log" 2>&1 &
    PIDS+=($!)
    EURLS+=("http://127.0.0.1:$((BASE + 10 + i))")
done
for u in "${EURLS[@]}"; do wait_http "$u/health"; done
read -r E_PUT E_PUT50 E_PUT99 < <(run_wrk etcd-put "${EURLS[@]}")
read -r E_GET E_GET50 E_GET99 < <(run_wrk etcd-get "${EURLS[@]}")

printf '\n3-node ringkv (N=3, W=R=2, fsync) vs 3-member etcd %s: %s connections over 3 members, %ss per run\n\n' \
    "$(etcd --version 2>/dev/null | head -n1 | awk '{print $3}')" "$CONNS" "$DURATION"
printf '%-28s %12s %10s %10s\n' "test" "ops/s" "p50 ms" "p99 ms"
printf '%-28s %12.0f %10.3f %10.3f\n' "ringkv PUT (quorum)" "$K_PUT" "$K_PUT50" "$K_PUT99"
printf '%-28s %12.0f %10.3f %10.3f\n' "etcd put" "$E_PUT" "$E_PUT50" "$E_PUT99"
printf '%-28s %12.0f %10.3f %10.3f\n' "ringkv GET (quorum)" "$K_GET" "$K_GET50" "$K_GET99"
printf '%-28s %12.0f %10.3f %10.3f\n' "etcd range (linearizable)" "$E_GET" "$E_GET50" "$E_GET99"
printf '\nratio PUT/etcd put: %s   (target >= 1.2, and >= 8000 PUT/s)\n' "$(ratio "$K_PUT" "$E_PUT")"
printf 'ratio GET/etcd range: %s   (target: >= 15000 GET/s)\n' "$(ratio "$K_GET" "$E_GET")"
