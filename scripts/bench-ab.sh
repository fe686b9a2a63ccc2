#!/usr/bin/env bash
# Two tal binaries side by side: both record this node at 10 Hz at the
# same time, pinned to the same CPU (so the machine's noise falls on both),
# and the CPU per sample of each is printed per window (kernel accounting
# of every thread), with the ratio B / A. For a before/after comparison of
# a change: build the earlier commit into another directory and pass its
# binary as A. Run it twice with A and B swapped: the one started first
# wakes first on the shared CPU.
# Usage: scripts/bench-ab.sh TAL_A TAL_B [SECONDS_PER_WINDOW=20] [WINDOWS=6]
set -euo pipefail
A=$1
B=$2
SECS=${3:-20}
WINDOWS=${4:-6}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cpu_ns() {
  cat /proc/"$1"/task/*/sched 2>/dev/null |
    awk '/se.sum_exec_runtime/ { s += $3 } END { printf "%.0f", s * 1e6 }'
}
start() { # binary, name
  "$1" record --interval 0.1 --out "$work/$2" --session-id "ab.$2" --node-id n \
    --socket "$work/$2.sock" --gpus none --pin 0 2>/dev/null &
  pids+=("$!")
}
start "$A" a
sleep 0.05
start "$B" b
sleep 3
echo "# A = $A, B = $B: ${WINDOWS} windows of ${SECS} s at 10 Hz, both pinned to CPU 0, $(nproc) CPUs"
echo "| window | A µs/sample | B µs/sample | B / A |"
echo "| --- | --- | --- | --- |"
for w in $(seq 1 "$WINDOWS"); do
  a0=$(cpu_ns "${pids[0]}")
  b0=$(cpu_ns "${pids[1]}")
  sleep "$SECS"
  a1=$(cpu_ns "${pids[0]}")
  b1=$(cpu_ns "${pids[1]}")
  awk -v w="$w" -v a=$((a1 - a0)) -v b=$((b1 - b0)) -v n=$((SECS * 10)) \
    'BEGIN { printf "| %d | %.1f | %.1f | %.3f |\n", w, a / n / 1000, b / n / 1000, b / a }'
done
