#!/usr/bin/env bash
# Socket ingest benchmark: tal's agent against RHAPSODY's own emit path,
# side by side in one run (see scripts/bench_ingest.py).
# Usage: scripts/bench-ingest.sh [EVENTS=1000000] [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin tal
py=$(scripts/setup-python.sh)
exec "$py" scripts/bench_ingest.py "$PWD/target/release/tal" "${1:-1000000}" "${2:-3}"
