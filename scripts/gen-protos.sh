#!/usr/bin/env bash
# Regenerate winnow/v1/*_pb2*.py from protos/winnow/v1/*.proto (needs grpcio-tools: the dev extra).
# Usage: scripts/gen-protos.sh [OUT_DIR]   (default: the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.}
mkdir -p "$out/winnow/v1"
"${PYTHON:-.venv/bin/python}" -m grpc_tools.protoc -Iprotos --python_out="$out" --pyi_out="$out" \
  --grpc_python_out="$out" protos/winnow/v1/*.proto
