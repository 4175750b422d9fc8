#!/usr/bin/env bash
# The main job: installs what is missing, builds nercc in release mode, starts a private RabbitMQ
# node, an encoder, a decoder and eight workers (two of them injected as stragglers), submits the
# MNIST test images, and prints accuracy and latency. The system keeps running so that you can
# watch it in the management UI; `ops/quickstart.sh stop` stops it.
#
#   ops/quickstart.sh [--scheme S] [--workers N] [--batch K] [--stragglers S] [--count C]
#   ops/quickstart.sh stop
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$NERCC_ROOT"

if [ "${1:-}" = "stop" ]; then
    source ops/services.sh
    nercc_stop_all
    ops/broker/stop.sh
    exit 0
fi

scheme=nercc n=12 k=4 s=3 count=1000
while [ $# -gt 0 ]; do
    case "$1" in
        --scheme) scheme=$2; shift 2 ;;
        --workers) n=$2; shift 2 ;;
        --batch) k=$2; shift 2 ;;
        --stragglers) s=$2; shift 2 ;;
        --count) count=$2; shift 2 ;;
        *) echo "unknown option '$1'; see the header of $0" >&2; exit 2 ;;
    esac
done

nercc_install_packages
echo "==> building nercc (release)"
swift build -c release --product nercc 2>&1 | grep -v '^\[' || true
swift build -c release --product nercc >/dev/null
NERCC_BIN="$(swift build -c release --show-bin-path)/nercc"
export NERCC_BIN

echo "==> private RabbitMQ node"
ops/broker/start.sh >/dev/null
source ops/broker/env.sh
source ops/services.sh
nercc_stop_all

# The encoder and decoder share a key (never the workers): every task carries a token that its
# result must echo, so a result for a task its sender never received is dead-lettered as bad-token.
if [ ! -s "$NERCC_BROKER_DIR/auth.key" ]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' >"$NERCC_BROKER_DIR/auth.key")
fi
export NERCC_AUTH_KEY_FILE="$NERCC_BROKER_DIR/auth.key"

echo "==> starting the encoder ($scheme, N=$n, K=$k, S=$s), the decoder and 8 workers (2 stragglers)"
# Stragglers: half their tasks delayed by a heavy-tailed (Pareto) time of at least 100 ms.
nercc_start_system nercc "$scheme" "$n" "$k" "$s" 8 2 \
    --straggler-probability 0.5 --straggler-delay-ms 100 --straggler-distribution pareto

echo "==> submitting $count MNIST test images (one query per request)"
"$NERCC_BIN" submit --model mnist-mlp --count "$count" --quiet --timeout 120 --log-level warning

cat <<MSG

The system is still running. Watch it in the RabbitMQ management UI:
  $NERCC_MGMT_URL  (user guest, password guest)
  Queues: nercc.requests.mnist-mlp, nercc.tasks.mnist-mlp (8 consumers, prefetch 16 each),
          nercc.results.0 (manifests) and nercc.worker-results.0 (results): the decoder,
          single active consumer; nercc.cancel.<worker> (one per worker); nercc.dead-letter
Submit more:  $NERCC_BIN submit --count 200
Logs:         $NERCC_SERVICES_DIR/*.log
Key:          $NERCC_AUTH_KEY_FILE (encoder and decoder; tasks and results carry its tokens)
Stop it all:  ops/quickstart.sh stop
MSG
