#!/usr/bin/env bash
# Multi-node merge scale check: NODES node logs of SECONDS at 10 Hz each
# (generated through the real log writer by examples/genlog, node clocks
# starting within the same second), merged by `tal convert` into one JSONL
# on stdout (to /dev/null, so that the disk does not set the pace) and into a
# file. Prints the wall time, events/s and peak RSS (the merge streams: its
# memory must not grow with the logs' total size).
# Usage: scripts/bench-merge.sh [NODES=256] [SECONDS=3600]
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-256}
SECS=${2:-3600}
cargo build --release --quiet --bin tal --example genlog
work=${BENCH_DIR:-$(mktemp -d)}
trap '[ -z "${BENCH_DIR:-}" ] && rm -rf "$work"' EXIT
t0=$(date +%s%N)
./target/release/examples/genlog "$work/logs" "$NODES" "$SECS" 10 2 >/dev/null
t1=$(date +%s%N)
size=$(du -sm "$work/logs" | cut -f1)
events=$((NODES * SECS * 10))
echo "# merge: $NODES node logs x ${SECS} s at 10 Hz = $events events, ${size} MB of logs (generated in $(( (t1 - t0) / 1000000 )) ms), $(nproc) CPUs"
measure() { # label, output
  /usr/bin/time -f '%e %M' -o "$work/time" ./target/release/tal convert "$work"/logs/*.tal -o "$2" >/dev/null 2>"$work/err"
  read -r secs kib <"$work/time"
  echo "| $1 | ${secs} s = $(awk -v e="$events" -v s="$secs" 'BEGIN { printf "%.2f", e / s / 1e6 }') M events/s; peak RSS $((kib / 1024)) MiB |"
}
echo "| measure | value |"
echo "| --- | --- |"
measure "tal convert of all logs to stdout (/dev/null)" -
measure "tal convert of all logs to a JSONL file" "$work/merged.jsonl"
ls -la "$work/merged.jsonl" | awk '{ printf "| merged JSONL | %.0f MB |\n", $5 / 1e6 }'
