#!/usr/bin/env bash
# Fault-injection suite: builds nercc (release) and runs `nercc chaos` against a private RabbitMQ
# node of its own, which it starts when it is not running and stops again at the end. Every
# argument goes to `nercc chaos` (see docs/faults.md):
#
#   ops/chaos.sh                                         every scenario (about 6 minutes)
#   ops/chaos.sh --scenarios kill-decoder,bad-worker     some of them
#   ops/chaos.sh --output chaos.md                       and a report
#
# The node keeps its state in .broker-chaos and listens on 5683 (AMQP), 5684 (AMQPS), 15683
# (management) and 15703 (Prometheus). The NERCC_BROKER_DIR, NERCC_NODENAME and NERCC_*_PORT
# variables of ops/broker/env.sh choose another one. The suite stops, restarts and alarms that
# node: never point it at a broker anything else uses.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$NERCC_ROOT"
nercc_install_packages
export NERCC_BROKER_DIR="${NERCC_BROKER_DIR:-$NERCC_ROOT/.broker-chaos}"
export NERCC_NODENAME="${NERCC_NODENAME:-nercc-chaos@localhost}"
export NERCC_AMQP_PORT="${NERCC_AMQP_PORT:-5683}" NERCC_AMQPS_PORT="${NERCC_AMQPS_PORT:-5684}"
export NERCC_MGMT_PORT="${NERCC_MGMT_PORT:-15683}" NERCC_PROMETHEUS_PORT="${NERCC_PROMETHEUS_PORT:-15703}"

echo "==> swift build -c release --product nercc" >&2
swift build -c release --product nercc >/dev/null
NERCC="$(swift build -c release --show-bin-path)/nercc"

# shellcheck source=broker/env.sh
source ops/broker/env.sh
if [ -z "$(nercc_broker_pids)" ]; then
    # Started here, so stopped here.
    trap 'ops/broker/stop.sh >/dev/null 2>&1 || true' EXIT
fi
ops/broker/start.sh >/dev/null
# shellcheck source=broker/env.sh
source ops/broker/env.sh
"$NERCC" chaos --url "$NERCC_AMQP_URL" --management-url "$NERCC_MGMT_URL" \
    --broker-scripts "$NERCC_ROOT/ops/broker" --log-level error "$@"
