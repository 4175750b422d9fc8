#!/usr/bin/env bash
# The effect of each serving change, one at a time: the same short `nercc bench serve` run (uncoded
# and nercc 12:4:3 at 65 and 196 requests/s, without stragglers and with 15% of tasks delayed by
# 400 ms) with everything on, then with one change turned back off. Results go to
# docs/bench/effects/<variant>/ (serve.md, serve.json, plots); docs/benchmarks.md summarises them.
#
#   ops/bench/effects.sh [variant ...]      # default: every variant
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
common=(--schemes uncoded:4:4,nercc:12:4:3 --stragglers none,tasks:0.15:400 --rates 65,196
    --saturation-concurrency 0 --duration 10 --warmup 2)
declare -A variants=(
    [all-on]=""
    [padded-batches]="--encoder-arg=--partial-batches=pad"
    [whole-partial-batches]="--encoder-arg=--no-split-partial-batches"
    [no-cancellation]="--decoder-arg=--no-cancel-leftovers --worker-arg=--no-cancellations"
    [one-task-at-a-time]="--worker-arg=--prefetch=1 --worker-arg=--max-batch=1"
    [quorum-coded-queues]="--coded-queues quorum"
    [no-manifest-copies]="--encoder-arg=--no-manifest-in-tasks"
    [no-rows]="--encoder-arg=--max-rows=1"
    [no-early-decode]="--decoder-arg=--no-early-decode"
)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(all-on padded-batches whole-partial-batches no-cancellation one-task-at-a-time
    quorum-coded-queues no-manifest-copies no-rows no-early-decode)
for name in "${names[@]}"; do
    [ -n "${variants[$name]+x}" ] || { echo "unknown variant '$name'" >&2; exit 2; }
    echo "==> $name"
    # shellcheck disable=SC2086
    ops/bench/serve.sh --output-dir "docs/bench/effects/$name" "${common[@]}" ${variants[$name]}
done
