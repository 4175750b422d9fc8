#!/usr/bin/env bash
# Sets up everything and runs the main job: installs what is missing, builds in release mode and
# runs the offline coding demonstration (every scheme on the same batch and straggler sets).
#
#   ops/quickstart.sh [extra options for `nercc code demo`]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$NERCC_ROOT"
nercc_install_packages

echo "==> building nercc (release)"
swift build -c release --product nercc 2>&1 | grep -v '^\[' || true
swift build -c release --product nercc >/dev/null
bin="$(swift build -c release --show-bin-path)/nercc"

echo "==> nercc code demo $*"
"$bin" code demo "$@"
