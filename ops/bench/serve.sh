#!/usr/bin/env bash
# Serving benchmark: starts the private RabbitMQ node when it is not running, builds nercc in
# release mode, and runs `nercc bench serve` with the arguments given (see docs/benchmarks.md for
# the runs recorded there). The services' logs go to <output-dir>/logs.
#
#   ops/bench/serve.sh --output-dir docs/bench/serve-3x --schemes uncoded:4:4,nercc:12:4:3 ...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$NERCC_ROOT"
nercc_install_packages
swift build -c release --product nercc >/dev/null
ops/broker/start.sh >/dev/null
# shellcheck source=../broker/env.sh
source ops/broker/env.sh
exec "$(swift build -c release --show-bin-path)/nercc" bench serve --url "$NERCC_AMQP_URL" --log-level warning "$@"
