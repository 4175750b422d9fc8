#!/usr/bin/env bash
# End-to-end benchmark of the quickstart workload: uncoded and nercc, each without and with
# stragglers, on the same broker, model, workers and queries, in one run. Prints a Markdown table.
#
#   ops/bench/e2e.sh [--count C] [--concurrency R]
#
# Workload: the MNIST test images, one query per request, R requests in flight; 8 worker
# processes. Stragglers: 2 of the 8 workers delay half of their tasks by a Pareto time
# (minimum 100 ms, shape 1.5). uncoded: N = K = 4. nercc: N = 12, K = 4, decode after N − S = 9.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$NERCC_ROOT"
count=1000 concurrency=32
while [ $# -gt 0 ]; do
    case "$1" in
        --count) count=$2; shift 2 ;;
        --concurrency) concurrency=$2; shift 2 ;;
        *) echo "unknown option '$1'" >&2; exit 2 ;;
    esac
done
nercc_install_packages
swift build -c release --product nercc >/dev/null
NERCC_BIN="$(swift build -c release --show-bin-path)/nercc"
export NERCC_BIN
ops/broker/start.sh >/dev/null
source ops/broker/env.sh
source ops/services.sh
out=$(mktemp -d)
trap 'nercc_stop_all' EXIT

run() {
    local label=$1 scheme=$2 n=$3 k=$4 s=$5 slow=$6
    local prefix="bench$RANDOM"
    nercc_start_system "$prefix" "$scheme" "$n" "$k" "$s" 8 "$slow" \
        --straggler-probability 0.5 --straggler-delay-ms 100 --straggler-distribution pareto \
        --straggler-pareto-shape 1.5
    # Warm-up, then the measured run.
    "$NERCC_BIN" submit --topology-prefix "$prefix" --count 64 --quiet --timeout 60 --log-level warning >/dev/null || true
    "$NERCC_BIN" submit --topology-prefix "$prefix" --count "$count" --concurrency "$concurrency" --json --log-level warning \
        --timeout 300 >"$out/$label.json" || true
    nercc_stop_all
}

run "uncoded" uncoded 4 4 0 0
run "uncoded + stragglers" uncoded 4 4 0 2
run "nercc" nercc 12 4 3 0
run "nercc + stragglers" nercc 12 4 3 2

python3 - "$out" <<'PY'
import json, os, sys
d = sys.argv[1]
rows = ["uncoded", "uncoded + stragglers", "nercc", "nercc + stragglers"]
data = {r: json.load(open(os.path.join(d, r + ".json")))["summary"] for r in rows}
print("| configuration | answered | accuracy | p50 ms | p99 ms | p99.9 ms | max ms | queries/s |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    s = data[r]
    l = s["latencyMilliseconds"]
    acc = "—" if s.get("accuracy") is None else f'{100 * s["accuracy"]:.1f}%'
    print(f'| {r} | {s["answered"]}/{s["requests"]} | {acc} | {l["p50"]:.1f} | {l["p99"]:.1f} | {l["p99.9"]:.1f} | '
          f'{l["max"]:.1f} | {s["queriesPerSecond"]:.1f} |')
u, us, n, ns = (data[r]["latencyMilliseconds"] for r in rows)
print()
print(f'p99 with stragglers / without: uncoded {us["p99"] / u["p99"]:.2f}×, nercc {ns["p99"] / n["p99"]:.2f}×')
print(f'p99 with stragglers, nercc / uncoded: {ns["p99"] / us["p99"]:.2f}')
PY
