#!/usr/bin/env bash
# Memory per task at conversion, and in `tal record` with many open tasks
# (see scripts/bench_tasks.py).
# Usage: scripts/bench-tasks.sh [OPEN=1000000] [CLOSED=1000000] [RECORD_OPEN=500000]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin tal --example gentasks
exec python3 scripts/bench_tasks.py "$PWD/target/release/tal" "$PWD/target/release/examples/gentasks" \
  "${1:-1000000}" "${2:-1000000}" "${3:-500000}"
