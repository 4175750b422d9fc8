#!/usr/bin/env bash
# Runs every check and test of the project: formatting, a warnings-as-errors build, the unit and
# fixture tests, and a smoke run of the command-line tool. Installs what is missing first.
#
#   ops/test.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$NERCC_ROOT"
nercc_install_packages

echo "==> swift format lint --strict"
swift format lint --strict --recursive Package.swift Sources Tests

echo "==> swift build (warnings are errors)"
swift build --build-tests 2>&1 | grep -v '^\[' || true
swift build --build-tests >/dev/null

echo "==> swift test"
mkdir -p .build
set +e
swift test 2>&1 | tee .build/test.log | grep -v -E '^(◇|􀟈) .* started\.$'
status=${PIPESTATUS[0]}
set -e
echo "==> summary"
grep -E '^(✔|✘|􁁛|􀢄) Test run with' .build/test.log || echo "no Swift Testing summary was printed"
if [ "$status" -ne 0 ]; then
    echo "tests failed (exit $status); failures:" >&2
    grep -E '(✘|􀢄)' .build/test.log | head -50 >&2 || true
    exit "$status"
fi

echo "==> smoke: nercc code demo"
swift run -q nercc code demo --trials 5 >/dev/null
echo "all checks passed"
