#!/usr/bin/env bash
# Regenerates Sources/ONNXProto/onnx.pb.swift, the Swift types of ONNX's protobuf schema, from
# Debian's onnx.proto (package libonnx-dev, ONNX 1.12: IR version 8, opsets up to 17) with protoc
# (protobuf-compiler) and swift-protobuf's protoc-gen-swift at the version Package.swift uses.
# The generated file is committed; the build never runs the generator.
#
#   ops/models/generate_onnx_proto.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$NERCC_ROOT"
version=1.39.0
for p in protobuf-compiler libonnx-dev; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >/dev/null
    fi
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone -q --depth 1 -b "$version" https://github.com/apple/swift-protobuf "$work/swift-protobuf"
(cd "$work/swift-protobuf" && swift build -c release --product protoc-gen-swift >/dev/null)
plugin="$(cd "$work/swift-protobuf" && swift build -c release --show-bin-path)/protoc-gen-swift"
mkdir -p "$work/out"
protoc --plugin=protoc-gen-swift="$plugin" --swift_opt=Visibility=Public --swift_out="$work/out" \
    -I /usr/include/onnx /usr/include/onnx/onnx.proto
cp "$work/out/onnx.pb.swift" Sources/ONNXProto/onnx.pb.swift
echo "wrote Sources/ONNXProto/onnx.pb.swift ($(wc -l < Sources/ONNXProto/onnx.pb.swift) lines) from $(dpkg-query -W -f='${Package} ${Version}' libonnx-dev) with protoc-gen-swift $version"
