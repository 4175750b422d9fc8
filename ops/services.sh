# Starting and stopping a local nercc system (sourced by ops/quickstart.sh and the benchmarks).
# Every process writes its log and pid under $NERCC_SERVICES_DIR (default .broker/services).

NERCC_SERVICES_DIR="${NERCC_SERVICES_DIR:-$NERCC_ROOT/.broker/services}"

# nercc_start NAME ARGS... — starts `nercc ARGS...` in the background as NAME.
nercc_start() {
    local name=$1
    shift
    mkdir -p "$NERCC_SERVICES_DIR"
    "$NERCC_BIN" "$@" >"$NERCC_SERVICES_DIR/$name.log" 2>&1 &
    echo $! >"$NERCC_SERVICES_DIR/$name.pid"
}

# nercc_stop_all — SIGTERM every started service (they drain), then wait for them.
nercc_stop_all() {
    local pids=()
    for f in "$NERCC_SERVICES_DIR"/*.pid; do
        [ -e "$f" ] || continue
        local pid
        pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
        rm -f "$f"
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# nercc_wait_consumers QUEUE COUNT — waits (≤ 60 s) until QUEUE has COUNT consumers.
nercc_wait_consumers() {
    local queue=$1 count=$2
    for _ in $(seq 1 300); do
        local n
        n=$(curl -s -u guest:guest "${NERCC_MGMT_URL%/}/api/queues/%2F/$queue" |
            python3 -c 'import json,sys
try: print(json.load(sys.stdin).get("consumers", 0))
except Exception: print(0)' 2>/dev/null || echo 0)
        [ "${n:-0}" -ge "$count" ] && return 0
        sleep 0.2
    done
    echo "error: $queue has fewer than $count consumers after 60 s; see $NERCC_SERVICES_DIR/*.log" >&2
    return 1
}

# nercc_start_system PREFIX SCHEME N K S WORKERS SLOW SLOW_ARGS... — a decoder, an encoder and
# WORKERS workers of which SLOW get the extra straggler arguments.
nercc_start_system() {
    local prefix=$1 scheme=$2 n=$3 k=$4 s=$5 workers=$6 slow=$7
    shift 7
    local common=(--topology-prefix "$prefix" --log-level warning)
    local model="$NERCC_ROOT/models/mnist-mlp/model.json"
    nercc_start "$prefix-decoder" decoder "${common[@]}"
    nercc_start "$prefix-encoder" encoder "${common[@]}" --model "$model" --scheme "$scheme" \
        --workers "$n" --batch "$k" --stragglers "$s"
    for i in $(seq 1 "$workers"); do
        if [ "$i" -le "$slow" ]; then
            nercc_start "$prefix-worker$i" worker "${common[@]}" --model "$model" --worker-id "$prefix-slow$i" \
                --seed "$i" "$@"
        else
            nercc_start "$prefix-worker$i" worker "${common[@]}" --model "$model" --worker-id "$prefix-w$i"
        fi
    done
    nercc_wait_consumers "$prefix.results.0" 1
    nercc_wait_consumers "$prefix.requests.mnist-mlp" 1
    nercc_wait_consumers "$prefix.tasks.mnist-mlp" "$workers"
}
