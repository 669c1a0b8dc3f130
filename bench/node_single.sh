#!/usr/bin/env bash
# One ringkv node vs redis-server (appendfsync always), in the same run.
#
# The server runs on CPU 0 and the load generator on CPU 1 (taskset), 64
# connections, keep-alive. ringkv is driven by wrk with Lua scripts, Redis by
# redis-benchmark; both write 100-byte values to random keys among $KEYS and
# then read them. Prints ops/s, p50/p99 and ringkv's ratio to Redis.
#
#   bash bench/node_single.sh            # DURATION=10 CONNS=64 KEYS=100000
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
export KEYS=${KEYS:-100000}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
VENV=${VENV:-.venv}
NODE_PORT=${NODE_PORT:-17180}
REDIS_PORT=${REDIS_PORT:-17181}

source bench/lib.sh
need wrk redis-server redis-tools util-linux
bench_workdir ringkv-bench

# -- ringkv ------------------------------------------------------------------
taskset -c "$SERVER_CPU" "$VENV/bin/ringkv-node" --id bench --listen "127.0.0.1:$NODE_PORT" \
    --data-dir "$WORK/node" --durability fsync --log-level warning >"$WORK/node.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$NODE_PORT/readyz"
# wrk takes one script: append the reporter to each
cat bench/wrk/put.lua bench/wrk/report.lua >"$WORK/put.lua"
cat bench/wrk/get.lua bench/wrk/report.lua >"$WORK/get.lua"
run_wrk() { # put|get -> "ops p50 p99"
    local line
    line=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency \
        -s "$WORK/$1.lua" "http://127.0.0.1:$NODE_PORT" 2>&1 | tee "$WORK/wrk-$1.txt" | grep '^RESULT' || true)
    if [ -z "$line" ]; then cat "$WORK/wrk-$1.txt" >&2; return 1; fi
    local errors
    errors=$(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$line")
    [ "$errors" = 0 ] || echo "warning: wrk $1 saw $errors non-2xx/socket errors" >&2
    sed -E 's/RESULT ops=([0-9.]+) p50_ms=([0-9.]+) p99_ms=([0-9.]+).*/\1 \2 \3/' <<<"$line"
}
read -r K_PUT K_PUT50 K_PUT99 < <(run_wrk put)
"$VENV/bin/python" bench/prefill.py "http://127.0.0.1:$NODE_PORT" "$KEYS"
read -r K_GET K_GET50 K_GET99 < <(run_wrk get)
BATCH=$(curl -fsS "http://127.0.0.1:$NODE_PORT/metrics" | awk '
    /^ringkv_commit_batch_ops_sum/ {s=$2} /^ringkv_commit_batch_ops_count/ {c=$2}
    END {if (c > 0) printf "%.1f", s / c; else print "n/a"}')

# -- redis ---------------------------------------------------------------------
mkdir -p "$WORK/redis"
taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" \
    --appendonly yes --appendfsync always --save "" --daemonize no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis_run() { # test -> "ops p50 p99"
    local requests=$(( DURATION * ${2:-60000} ))
    taskset -c "$LOAD_CPU" redis-benchmark -p "$REDIS_PORT" -c "$CONNS" -n "$requests" -d 100 \
        -r "$KEYS" -t "$1" --csv 2>/dev/null | tail -n 1 | tr -d '"' \
        | awk -F, '{printf "%s %s %s\n", $2, $5, $7}'
}
read -r R_SET R_SET50 R_SET99 < <(redis_run set 40000)
read -r R_GET R_GET50 R_GET99 < <(redis_run get 80000)

printf '\nringkv single node vs redis-server (appendfsync always): %s connections, %ss per run,\n' "$CONNS" "$DURATION"
printf 'server on CPU %s, load on CPU %s, 100-byte values, %s keys\n\n' "$SERVER_CPU" "$LOAD_CPU" "$KEYS"
printf '%-28s %12s %10s %10s\n' "test" "ops/s" "p50 ms" "p99 ms"
printf '%-28s %12.0f %10.3f %10.3f\n' "ringkv PUT (fsync)" "$K_PUT" "$K_PUT50" "$K_PUT99"
printf '%-28s %12.0f %10.3f %10.3f\n' "redis SET (always)" "$R_SET" "$R_SET50" "$R_SET99"
printf '%-28s %12.0f %10.3f %10.3f\n' "ringkv GET" "$K_GET" "$K_GET50" "$K_GET99"
printf '%-28s %12.0f %10.3f %10.3f\n' "redis GET" "$R_GET" "$R_GET50" "$R_GET99"
printf '\nratio PUT/SET: %s   (target >= 0.20, and >= 10000 PUT/s)\n' "$(ratio "$K_PUT" "$R_SET")"
printf 'ratio GET/GET: %s   (target >= 0.25, and >= 20000 GET/s)\n' "$(ratio "$K_GET" "$R_GET")"
printf 'ringkv writes per fsync'"'"'d commit (mean): %s\n' "$BATCH"
