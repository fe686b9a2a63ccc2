#!/usr/bin/env bash
# One run of tal on a machine with a real NVIDIA GPU, beside RHAPSODY
# 0.6.0's own telemetry adapter, in a few minutes (what a short lease of a
# GPU machine allows). Run from the repository's root after
# scripts/gpu-machine/prepare.sh staged .gpu-kit/ (tal needs no toolchain
# there; the machine needs python3 with PyTorch, nvidia-smi, perl, taskset).
#
#  1. phases: tal records a load of known phases (idle, matmul, a 0.3 s on
#     / 0.3 s off duty cycle, a 16 GiB allocation: load.py) while
#     RHAPSODY's adapter samples the same GPU at the same 0.1 s;
#  2. per task: two `tal run` tasks allocating 8 and 2 GiB at once, and a
#     CPU-only one: their GPU memory peaks and the devices' energy;
#  3. CUDA_VISIBLE_DEVICES given as a UUID;
#  4. idle overhead, 36 s side by side: tal (its GPU thread apart),
#     examples/floor (the /proc floor, and an empty thread waking at 10 Hz:
#     one wake-up's cost) and RHAPSODY's adapter; tal's peak memory, its
#     anonymous part apart;
#  5. task sampling (scripts/bench-task-sampling.sh) on this machine's
#     CPUs, sleeping and active processes, beside the reads' own floor.
#
# Prints a summary (scripts/gpu-machine/summarize.py) and leaves in $OUT:
# summary.txt, log.txt and results.tgz (every JSONL and raw figure).
set -u
ROOT=$PWD
KIT=$ROOT/.gpu-kit
H=$PWD/scripts/gpu-machine
T=$KIT/tal
R=${OUT:?set OUT to the folder for the results}
W=$(mktemp -d)
mkdir -p "$W/res"
exec > >(tee "$R/log.txt") 2>&1
step() { echo "== $(date +%T) $*"; }
step "machine"
nvidia-smi --query-gpu=name,driver_version,uuid,memory.total --format=csv
nproc; uname -r; python3 --version
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$W/site" "$KIT"/whl/*.whl \
  && export PYTHONPATH=$W/site \
  || echo "RHAPSODY's wheels do not install here (prepare.sh's PYVER is not this Python?): its adapter will not run"
cd "$W"

step "1. phases: tal and RHAPSODY's adapter side by side at 0.1 s"
(timeout 60 python3 "$H/rh_adapter.py" 30 "$W/rh1" 0.1 >res/rh1.json 2>res/rh1.err) &
RH=$!
sleep 1
timeout 60 "$T" record --interval 0.1 --session-id gpu.phases --out "$W/t1" -- python3 "$H/load.py" res/phases.jsonl 2>res/t1.err
echo "tal rc=$?"
wait $RH
cp "$W"/t1/*.jsonl res/t1.jsonl; cp "$W"/rh1/*.jsonl res/rh1.jsonl 2>/dev/null

step "2. per-task GPU memory and energy through tal run"
"$T" record --interval 0.1 --session-id gpu.tasks --out "$W/t2" --socket "$W/t2.sock" 2>res/t2.err &
P2=$!
export TAL_SOCKET=$W/t2.sock
timeout 20 "$T" wait
"$T" run --task-id alloc8 -- python3 "$H/alloc.py" 8 2 & A1=$!
"$T" run --task-id alloc2 -- python3 "$H/alloc.py" 2 2 & A2=$!
"$T" run --task-id cpu_only -- sleep 1
wait $A1 $A2; sleep 1; timeout 60 "$T" stop; wait $P2; unset TAL_SOCKET
cp "$W"/t2/*.jsonl res/t2.jsonl

step "3. CUDA_VISIBLE_DEVICES by UUID"
U=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | head -1)
CUDA_VISIBLE_DEVICES=$U timeout 20 "$T" record --interval 0.1 --session-id gpu.uuid --out "$W/t3" -- sleep 2 2>res/t3.err
cp "$W"/t3/*.jsonl res/t3.jsonl

step "4. idle overhead, 36 s: tal, the floor and RHAPSODY's adapter side by side"
cpu_ns() { # pid [thread name]
  for t in /proc/"$1"/task/*; do
    if [ -z "${2:-}" ] || [ "$(cat "$t/comm" 2>/dev/null)" = "$2" ]; then cat "$t/sched" 2>/dev/null; fi
  done | awk '/se.sum_exec_runtime/ { s += $3 } END { printf "%.0f", s * 1e6 }'
}
FLOOR_WAKE_THREAD=1 "$KIT/floor" 0.1 2>/dev/null & F=$!
"$T" record --interval 0.1 --session-id gpu.idle --out "$W/t4" --socket "$W/t4.sock" 2>res/t4.err & P=$!
(timeout 60 python3 "$H/rh_adapter.py" 44 "$W/rh4" 0.1 >res/rh4.json 2>res/rh4.err) &
RH=$!
sleep 3
a0=$(cpu_ns $P); g0=$(cpu_ns $P tal-gpu); f0=$(cpu_ns $F); k0=$(cpu_ns $F floor-wake); t0=$(date +%s%N)
sleep 36
a1=$(cpu_ns $P); g1=$(cpu_ns $P tal-gpu); f1=$(cpu_ns $F); k1=$(cpu_ns $F floor-wake); t1=$(date +%s%N)
awk -v a=$((a1 - a0)) -v g=$((g1 - g0)) -v f=$((f1 - f0)) -v k=$((k1 - k0)) -v t=$((t1 - t0)) 'BEGIN { n = t / 1e8;
  printf "{\"tal_us_per_sample\": %.1f, \"tal_gpu_thread_us_per_poll\": %.1f, \"tal_without_gpu_thread_us_per_sample\": %.1f, \"floor_us_per_sample\": %.1f, \"wake_us\": %.1f}\n",
    a / 1e3 / n, g / 1e3 / n, (a - g) / 1e3 / n, (f - k) / 1e3 / n, k / 1e3 / n }' >res/overhead.json
grep -E 'VmHWM|RssAnon|RssFile' /proc/$P/status >res/tal-memory.txt
kill -TERM $P $F; wait $P $F $RH
cp "$W"/t4/*.jsonl res/t4.jsonl

step "5. task sampling on this machine's CPUs"
cd "$ROOT"
for cfg in "ACTIVE=0" "ACTIVE=1"; do
  env $cfg BIN_DIR="$KIT" ROUNDS=2 TASKS=64 scripts/bench-task-sampling.sh 16 1 2 >"$W/res/tasks-$cfg.txt" 2>&1
done
cd "$W"

step "summary"
python3 "$H/summarize.py" res | tee "$R/summary.txt"
tar czf "$R/results.tgz" -C res .
ls -la "$R"
