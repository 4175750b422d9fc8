#!/usr/bin/env bash
# The Python client (clients/python) against a live system: installs it into a fresh virtual
# environment, starts a decoder, an encoder (models/mnist-mlp, default scheme) and four workers under
# their own topology prefix on an already running broker, runs the client's unit tests and live
# tests, and stops the services again.
#
#   ops/broker/start.sh && source ops/broker/env.sh
#   NERCC_BINARY=/path/to/nercc ops/checks/python_client.sh
#
# Needs NERCC_AMQP_URL and NERCC_MGMT_URL (from ops/broker/env.sh) and NERCC_BINARY, the nercc binary.
# Optional: NERCC_PYTHON_CLIENT_DIR, where the virtual environment (python-client-venv) and the
# services' logs (python-client-services) go, default .build; NERCC_PYTHON_CLIENT_PREFIX, the topology
# prefix, default pyclient; NERCC_PYTHON (default python3). pip fetches pika from PyPI.
# Exits 1 when a test fails, 2 on a usage error.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$NERCC_ROOT"

for var in NERCC_AMQP_URL NERCC_MGMT_URL NERCC_BINARY; do
    if [ -z "${!var:-}" ]; then
        echo "error: $var is not set (source ops/broker/env.sh for the broker; NERCC_BINARY is the nercc binary)" >&2
        exit 2
    fi
done
if [ ! -x "$NERCC_BINARY" ]; then
    echo "error: NERCC_BINARY=$NERCC_BINARY is not an executable" >&2
    exit 2
fi

dir="${NERCC_PYTHON_CLIENT_DIR:-$NERCC_ROOT/.build}"
venv="$dir/python-client-venv"
prefix="${NERCC_PYTHON_CLIENT_PREFIX:-pyclient}"
python="${NERCC_PYTHON:-python3}"
model="$NERCC_ROOT/models/mnist-mlp/model.json"
workers=4
export NERCC_SERVICES_DIR="$dir/python-client-services"
export NERCC_BIN="$NERCC_BINARY"
source ops/services.sh

echo "==> virtual environment $venv"
mkdir -p "$dir"
rm -rf "$venv"
if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> $python -m venv failed; installing python3-venv"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        "$python" -m venv "$venv"
    else
        echo "error: '$python -m venv' failed; install python3-venv" >&2
        exit 1
    fi
fi
vpython="$venv/bin/python"
echo "==> pip install ./clients/python"
"$vpython" -m pip install --quiet --disable-pip-version-check ./clients/python
"$vpython" -c 'import nercc_client, pika; print(f"nercc_client {nercc_client.__version__}, pika {pika.__version__}")'

# Services: stopped on any exit, including a failed start.
cleanup() {
    nercc_stop_all
}
trap cleanup EXIT
nercc_stop_all # leftovers of an interrupted run
echo "==> starting a decoder, an encoder and $workers workers (topology prefix $prefix)"
common=(--topology-prefix "$prefix" --log-level warning)
nercc_start "$prefix-decoder" decoder "${common[@]}"
nercc_start "$prefix-encoder" encoder "${common[@]}" --model "$model"
for i in $(seq 1 "$workers"); do
    nercc_start "$prefix-worker$i" worker "${common[@]}" --model "$model" --worker-id "$prefix-w$i"
done
nercc_wait_consumers "$prefix.results.0" 1
nercc_wait_consumers "$prefix.requests.mnist-mlp" 1
nercc_wait_consumers "$prefix.tasks.mnist-mlp" "$workers"

export NERCC_PYCLIENT_PREFIX="$prefix" NERCC_REPO_ROOT="$NERCC_ROOT"
failed=()
# run_tests NAME FILE: runs one test module with the venv's python, its summary included.
run_tests() {
    local name=$1 file=$2 log="$dir/python-client-$1.log"
    echo "==> $name tests"
    if (cd clients/python && "$vpython" -m unittest -v "$file") >"$log" 2>&1; then
        tail -n 4 "$log" | sed '/^$/d'
    else
        cat "$log"
        failed+=("$name")
    fi
}
run_tests unit tests/test_unit.py
run_tests live tests/test_live.py

echo "==> examples/predict.py"
if ! "$vpython" clients/python/examples/predict.py --url "$NERCC_AMQP_URL" --prefix "$prefix" --count 5; then
    failed+=(example)
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "python client: FAILED (${failed[*]}); service logs in $NERCC_SERVICES_DIR" >&2
    exit 1
fi
echo "python client: unit tests, live tests and example passed"
