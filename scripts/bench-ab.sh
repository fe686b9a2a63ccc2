#!/usr/bin/env bash
# Two tal binaries side by side: both record this node at 10 Hz at the
# same time, pinned to the same CPU (so the machine's noise falls on both),
# and the CPU per sample of each is printed per window (kernel accounting
# of every thread), with the ratio B / A. For a before/after comparison of
# a change: build the earlier commit into another directory and pass its
# binary as A. Run it twice with A and B swapped: the one started first
# wakes first on the shared CPU.
# With GPU_STUB=N both run their GPU agent against the test suite's stub
# NVML (tests/nvml-stub, each call costing what an H200's driver takes)
# with N devices, and each one's GPU thread (tal-gpu) is printed apart, per
# poll; without it, --gpus none.
# Usage: [GPU_STUB=N] scripts/bench-ab.sh TAL_A TAL_B [SECONDS_PER_WINDOW=20] [WINDOWS=6]
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
cpu_ns() { # pid [thread name]
  for t in /proc/"$1"/task/*; do
    if [ -z "${2:-}" ] || [ "$(cat "$t/comm" 2>/dev/null)" = "$2" ]; then cat "$t/sched" 2>/dev/null; fi
  done | awk '/se.sum_exec_runtime/ { s += $3 } END { printf "%.0f", s * 1e6 }'
}
gpus=(--gpus none)
if [ -n "${GPU_STUB:-}" ]; then
  cc -shared -fPIC -O2 -o "$work/libnvidia-ml.so.1" "$(dirname "$0")/../tests/nvml-stub/nvml_stub.c"
  for i in $(seq 0 $((GPU_STUB - 1))); do
    printf 'device GPU-%08d-0000-0000-0000-000000000000 00000000:%02X:00.0 85899345920 stub GPU\nutil %d 50\n' "$i" "$((i + 16))" "$i"
  done >"$work/nvml.cfg"
  export TAL_NVML_LIBRARY="$work/libnvidia-ml.so.1" NVML_STUB_CONFIG="$work/nvml.cfg"
  gpus=()
fi
start() { # binary, name
  "$1" record --interval 0.1 --out "$work/$2" --session-id "ab.$2" --node-id n \
    --socket "$work/$2.sock" "${gpus[@]}" --pin 0 2>/dev/null &
  pids+=("$!")
}
start "$A" a
sleep 0.05
start "$B" b
sleep 3
echo "# A = $A, B = $B: ${WINDOWS} windows of ${SECS} s at 10 Hz, both pinned to CPU 0, $(nproc) CPUs"
echo "| window | A µs/sample | B µs/sample | B / A | A GPU thread µs/poll | B GPU thread µs/poll | B / A |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for w in $(seq 1 "$WINDOWS"); do
  a0=$(cpu_ns "${pids[0]}"); ga0=$(cpu_ns "${pids[0]}" tal-gpu)
  b0=$(cpu_ns "${pids[1]}"); gb0=$(cpu_ns "${pids[1]}" tal-gpu)
  sleep "$SECS"
  a1=$(cpu_ns "${pids[0]}"); ga1=$(cpu_ns "${pids[0]}" tal-gpu)
  b1=$(cpu_ns "${pids[1]}"); gb1=$(cpu_ns "${pids[1]}" tal-gpu)
  awk -v w="$w" -v a=$((a1 - a0)) -v b=$((b1 - b0)) -v ga=$((ga1 - ga0)) -v gb=$((gb1 - gb0)) -v n=$((SECS * 10)) \
    'BEGIN { printf "| %d | %.1f | %.1f | %.3f | %.1f | %.1f | %s |\n", w, a / n / 1000, b / n / 1000, b / a, ga / n / 1000, gb / n / 1000, (ga > 0 ? sprintf("%.3f", gb / ga) : "-") }'
done
