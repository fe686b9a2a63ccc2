#!/usr/bin/env bash
# Creates (once) the Python environment the integration tests and the
# ingest benchmark use: a venv at target/pyenv with RHAPSODY 0.6.0 and its
# telemetry extra, and the official OTLP protobuf definitions
# (opentelemetry-proto, for the test OTLP receiver), and the engines that
# read tal's Parquet dataset in its tests (pyarrow, DuckDB, polars), from
# PyPI. Idempotent; prints the interpreter's path.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/pyenv
want=("rhapsody-py[telemetry]==0.6.0" "opentelemetry-proto==1.45.2"
  "pyarrow==26.0.1" "duckdb==2.0.1" "polars==2.1.0")
check='import rhapsody.telemetry, opentelemetry.sdk, opentelemetry.proto.collector.trace.v1.trace_service_pb2, pyarrow, duckdb, polars' 
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" 2>/dev/null; then
  echo "$PWD/$venv/bin/python"
  exit 0
fi
py=$(command -v python3 || true)
if [ -z "$py" ]; then
  echo "setup-python: python3 is needed (apt-get install -y python3 python3-venv)" >&2
  exit 1
fi
rm -rf "$venv"
mkdir -p target
echo "setup-python: creating $venv and installing ${want[*]} from PyPI" >&2
"$py" -m venv "$venv" >&2
"$venv/bin/pip" install --progress-bar off --disable-pip-version-check "${want[@]}" >&2
"$venv/bin/python" -c "$check" >&2
echo "$PWD/$venv/bin/python"
