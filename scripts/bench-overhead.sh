#!/usr/bin/env bash
# Whole-process overhead benchmark of `tal record` against the bare-read floor.
#
# Runs, side by side in one run on an otherwise idle machine:
#   - tal record --interval INTERVAL (the whole agent: sampler, dispatcher,
#     writer; its log on the local disk), and
#   - examples/floor: the same four kept-open /proc preads on the same
#     absolute deadlines, pinned to the same CPU, and nothing else.
# CPU time of each comes from the kernel's accounting (se.sum_exec_runtime of
# every thread, /proc/PID/task/*/sched, nanosecond resolution), taken over
# WINDOWS equal windows per round after a warm-up; the script prints the median CPU µs
# per sample of each, their ratio, tal's peak RSS, and then the convert
# throughput on one core (1 M events generated through the real log writer).
#
# With GPU_STUB=N, tal also runs its GPU agent against the stub NVML
# library of the tests (N devices, built here with the C compiler): the
# script then also prints tal's CPU per sample without the GPU thread (the
# /proc agent's budget, which must hold with the GPU agent running) and the
# GPU thread's CPU per poll. The stub costs what an H200's driver costs
# per call (its defaults; NVML_STUB_EXTRA adds lines to its config, e.g.
# "cost all 0"), and the floor then also runs an empty thread on the same
# deadlines (floor-wake): a wake-up's own cost, printed beside the GPU
# thread's. The floor's ratio is taken without that thread. Also printed:
# tal's anonymous and file-backed resident memory.
#
# With OTLP_PUSH=INTERVAL (e.g. 1s), tal also pushes live to the test suite's real OTLP
# receiver on localhost (scripts/otlp_receiver.py --count-only) every
# INTERVAL: the per-sample ratio then includes the exporter thread.
#
# Usage: [ROUNDS=2] [GPU_STUB=N] [OTLP_PUSH=1s] [TAL_BIN=path] scripts/bench-overhead.sh [SECONDS=60] [INTERVAL=0.1] [WINDOWS=6]
# Budget (DESIGN.md): tal <= 1.25x the floor per sample; RSS <= 10 MiB;
# convert >= 1 M events/s on one core.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
INTERVAL=${2:-0.1}
WINDOWS=${3:-6}

cargo build --release --quiet --bin tal --example floor --example genlog
# TAL_BIN: another tal binary to measure (an earlier commit's, for a side
# by side comparison; the convert section is then skipped, as the log
# format may differ).
TAL=${TAL_BIN:-./target/release/tal}
work=$(mktemp -d)
pids=()
rxpid=""
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  [ -n "$rxpid" ] && kill -TERM "$rxpid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Sum of on-CPU time of every thread of a process, in ns.
cpu_ns() {
  cat /proc/"$1"/task/*/sched 2>/dev/null |
    awk '/se.sum_exec_runtime/ { s += $3 } END { printf "%.0f", s * 1e6 }'
}
# The same for the threads whose name is (gpu) or is not (nogpu) $3
# (default tal-gpu).
cpu_ns_gpu() {
  local t files=()
  for t in /proc/"$1"/task/*; do
    if [ "$(cat "$t/comm" 2>/dev/null)" = "${3:-tal-gpu}" ]; then
      [ "$2" = gpu ] && files+=("$t/sched")
    else
      [ "$2" = nogpu ] && files+=("$t/sched")
    fi
  done
  [ ${#files[@]} -eq 0 ] && { echo 0; return; }
  cat "${files[@]}" 2>/dev/null |
    awk '/se.sum_exec_runtime/ { s += $3 } END { printf "%.0f", s * 1e6 }'
}
extra=()
if [ -n "${OTLP_PUSH:-}" ]; then
  py=$(scripts/setup-python.sh)
  "$py" scripts/otlp_receiver.py serve "$work/otlp.jsonl" --port-file "$work/otlp.port" --count-only &
  rxpid=$!
  while [ ! -s "$work/otlp.port" ]; do sleep 0.05; done
  extra=(--otlp-endpoint "http://127.0.0.1:$(cat "$work/otlp.port")" --otlp-interval "$OTLP_PUSH")
fi
if [ -n "${GPU_STUB:-}" ]; then
  cc -shared -fPIC -O2 -o "$work/libnvidia-ml.so.1" tests/nvml-stub/nvml_stub.c
  for i in $(seq 0 $((GPU_STUB - 1))); do
    printf 'device GPU-%08d-0000-0000-0000-000000000000 00000000:%02X:00.0 85899345920 stub GPU\nutil %d 10,50,90,30,70\n' "$i" "$((i + 16))" "$i"
  done >"$work/nvml.cfg"
  [ -n "${NVML_STUB_EXTRA:-}" ] && printf '%b\n' "$NVML_STUB_EXTRA" >>"$work/nvml.cfg"
  export FLOOR_WAKE_THREAD=1
  export TAL_NVML_LIBRARY="$work/libnvidia-ml.so.1" NVML_STUB_CONFIG="$work/nvml.cfg"
fi
now_ns() { date +%s%N; }
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# Per-sample cost on these VMs depends on cache warmth, so on which process
# wakes first when both share a CPU: run ROUNDS rounds, alternating which one
# starts first (the other starts half an interval later), and take medians
# over all windows of all rounds.
ROUNDS=${ROUNDS:-2}
half=$(awk -v i="$INTERVAL" 'BEGIN { printf "%.3f", i / 2 }')
window=$(awk -v s="$SECS" -v w="$WINDOWS" -v r="$ROUNDS" 'BEGIN { printf "%.3f", s / w / r }')
echo "# tal overhead: ${SECS}s at interval ${INTERVAL}s, ${ROUNDS} rounds x ${WINDOWS} windows of ${window}s, $(nproc) CPUs, $(uname -r)"
printf '%-6s %-8s %14s %16s %8s\n' round window "tal us/sample" "floor us/sample" ratio
: >"$work/tal.us"
: >"$work/floor.us"
: >"$work/ratio"
: >"$work/nogpu.us"
: >"$work/gpu.us"
: >"$work/wake.us"
: >"$work/proc.us"
: >"$work/disp.us"
for round in $(seq 1 "$ROUNDS"); do
  start_floor() {
    ./target/release/examples/floor "$INTERVAL" 2>>"$work/floor.err" &
    FLOOR=$!
    pids+=("$FLOOR")
  }
  start_tal() {
    rm -rf "$work/rec"
    "$TAL" record --interval "$INTERVAL" --out "$work/rec" --session-id bench.overhead --node-id n1 "${extra[@]}" 2>"$work/tal.err" &
    TALPID=$!
    pids+=("$TALPID")
  }
  if [ $((round % 2)) -eq 1 ]; then start_floor; sleep "$half"; start_tal; else start_tal; sleep "$half"; start_floor; fi
  sleep 3
  for w in $(seq 1 "$WINDOWS"); do
    t0=$(now_ns); a0=$(cpu_ns "$TALPID"); f0=$(cpu_ns "$FLOOR")
    if [ -n "${GPU_STUB:-}" ]; then
      g0=$(cpu_ns_gpu "$TALPID" gpu); n0=$(cpu_ns_gpu "$TALPID" nogpu)
      p0=$(cpu_ns_gpu "$TALPID" gpu tal-proc); d0=$(cpu_ns_gpu "$TALPID" gpu tal-dispatch)
      w0=$(cpu_ns_gpu "$FLOOR" gpu floor-wake); f0=$(cpu_ns_gpu "$FLOOR" nogpu floor-wake)
    fi
    sleep "$window"
    t1=$(now_ns); a1=$(cpu_ns "$TALPID"); f1=$(cpu_ns "$FLOOR")
    if [ -n "${GPU_STUB:-}" ]; then
      w1=$(cpu_ns_gpu "$FLOOR" gpu floor-wake); f1=$(cpu_ns_gpu "$FLOOR" nogpu floor-wake)
      awk -v g="$((w1 - w0))" -v t="$((t1 - t0))" -v i="$INTERVAL" 'BEGIN { printf "%.2f\n", g / 1e3 / (t / 1e9 / i) }' >>"$work/wake.us"
      g1=$(cpu_ns_gpu "$TALPID" gpu); n1=$(cpu_ns_gpu "$TALPID" nogpu)
      p1=$(cpu_ns_gpu "$TALPID" gpu tal-proc); d1=$(cpu_ns_gpu "$TALPID" gpu tal-dispatch)
      awk -v g="$((p1 - p0))" -v t="$((t1 - t0))" -v i="$INTERVAL" 'BEGIN { printf "%.2f\n", g / 1e3 / (t / 1e9 / i) }' >>"$work/proc.us"
      awk -v g="$((d1 - d0))" -v t="$((t1 - t0))" -v i="$INTERVAL" 'BEGIN { printf "%.2f\n", g / 1e3 / (t / 1e9 / i) }' >>"$work/disp.us"
      awk -v g="$((g1 - g0))" -v t="$((t1 - t0))" -v i="$INTERVAL" 'BEGIN { printf "%.2f\n", g / 1e3 / (t / 1e9 / i) }' >>"$work/gpu.us"
      awk -v g="$((n1 - n0))" -v t="$((t1 - t0))" -v i="$INTERVAL" 'BEGIN { printf "%.2f\n", g / 1e3 / (t / 1e9 / i) }' >>"$work/nogpu.us"
    fi
    read -r tu fu r < <(awk -v a="$((a1 - a0))" -v f="$((f1 - f0))" -v t="$((t1 - t0))" -v i="$INTERVAL" \
      'BEGIN { n = t / 1e9 / i; printf "%.2f %.2f %.3f\n", a / 1e3 / n, f / 1e3 / n, a / f }')
    echo "$tu" >>"$work/tal.us"
    echo "$fu" >>"$work/floor.us"
    echo "$r" >>"$work/ratio"
    printf '%-6s %-8s %14s %16s %8s\n' "$round" "$w" "$tu" "$fu" "$r"
  done
  rss_kib=$(awk '/VmHWM/ { print $2 }' /proc/"$TALPID"/status)
  rss_anon=$(awk '/RssAnon/ { print $2 }' /proc/"$TALPID"/status)
  rss_file=$(awk '/RssFile/ { print $2 }' /proc/"$TALPID"/status)
  rss_now=$(awk '/VmRSS/ { print $2 }' /proc/"$TALPID"/status)
  kill -TERM "$TALPID"
  wait "$TALPID" || true
  kill -TERM "$FLOOR"
  wait "$FLOOR" || true
  pids=()
done
tm=$(median <"$work/tal.us")
fm=$(median <"$work/floor.us")
rm_=$(median <"$work/ratio")
jsonl=$(ls "$work"/rec/*.telemetry.jsonl)
jitter=$(python3 -c "
import json,sys
m=[json.loads(l) for l in open(sys.argv[1]) if '\"section\": \"metric\"' in l][0]
print('jitter p50 %.3f ms, p99 %.3f ms; read latency p50 %.1f us; samples %d, dropped %d, deadlines missed %d' % (
  m['agent_sampling_jitter_p50_ms'], m['agent_sampling_jitter_p99_ms'], m['agent_sample_latency_p50_us'],
  m['agent_samples_taken'], m['agent_samples_dropped'], m['agent_deadlines_missed']))" "$jsonl")

echo
echo "| measure | value |"
echo "| --- | --- |"
echo "| tal CPU per sample (median of windows) | ${tm} µs |"
echo "| floor CPU per sample (median of windows) | ${fm} µs |"
echo "| ratio of medians tal / floor | $(awk -v a="$tm" -v b="$fm" 'BEGIN { printf "%.3f", a / b }') (budget ≤ 1.25) |"
echo "| median of per-window ratios | ${rm_} |"
echo "| tal CPU share of one core | $(awk -v a="$tm" -v i="$INTERVAL" 'BEGIN { printf "%.4f %%", a / 1e6 / i * 100 }') |"
echo "| tal peak RSS (VmHWM) | $((rss_kib / 1024)).$(((rss_kib % 1024) * 10 / 1024)) MiB (now ${rss_now} KiB; budget ≤ 10 MiB) |"
echo "| tal resident memory at the end: anonymous / file-backed | ${rss_anon} KiB / ${rss_file} KiB |"
echo "| tal's own view | ${jitter} |"
if [ -n "${OTLP_PUSH:-}" ]; then
  echo "| live OTLP push (every ${OTLP_PUSH}, to the local receiver) | $(grep -o 'OTLP live push.*delivered' "$work/tal.err" | tail -1) |"
fi
if [ -n "${GPU_STUB:-}" ]; then
  nm=$(median <"$work/nogpu.us")
  echo "| with the GPU agent on ${GPU_STUB} stub GPUs: tal CPU per sample without the GPU thread (median) | ${nm} µs, ratio to the floor $(awk -v a="$nm" -v b="$fm" 'BEGIN { printf "%.3f", a / b }') (budget ≤ 1.25) |"
  pm=$(median <"$work/proc.us")
  echo "| of which the /proc sampler thread (tal-proc), against the floor's one thread | ${pm} µs, ratio $(awk -v a="$pm" -v b="$fm" 'BEGIN { printf "%.3f", a / b }') |"
  echo "| of which the dispatcher (tal-dispatch: events, per_gpu lines, log) | $(median <"$work/disp.us") µs |"
  gm=$(median <"$work/gpu.us"); wm=$(median <"$work/wake.us")
  echo "| GPU thread CPU per poll, ${GPU_STUB} devices (median of windows) | ${gm} µs |"
  echo "| an empty thread's wake-up on the same deadlines (floor-wake, median) | ${wm} µs |"
  echo "| GPU thread beyond its wake-up, per device and poll | $(awk -v g="$gm" -v w="$wm" -v n="$GPU_STUB" 'BEGIN { printf "%.1f", (g - w) / n }') µs (budget ≤ 50) |"
  echo "| whole tal against its budget: floor × 1.25 + wake-up + 50 µs × devices | ${tm} µs vs $(awk -v f="$fm" -v w="$wm" -v n="$GPU_STUB" 'BEGIN { printf "%.1f", f * 1.25 + w + 50 * n }') µs |"
  python3 -c "
import json,sys
m=[json.loads(l) for l in open(sys.argv[1]) if '\"section\": \"metric\"' in l][0]
print('| GPU agent, its own view | polls %d, deadlines missed %d, NVML per device and poll p50 %.1f us, p99 %.1f us; %.1f us CPU per poll; %d back-fills at %s us each |' % (
  m['agent_gpu_polls'], m['agent_gpu_deadlines_missed'], m['agent_nvml_latency_p50_us'], m['agent_nvml_latency_p99_us'], m['agent_gpu_cpu_us_per_poll'],
  m.get('agent_gpu_backfills', 0), m.get('agent_gpu_backfill_cpu_us', '-')))" "$jsonl"
fi

# Shutdown: SIGTERM -> exit, after 2 s of recording (the final sample,
# drain, SessionEnded, snapshot, end marker, trim, fsync; and with the JSONL).
: >"$work/stop.ms"
: >"$work/stopc.ms"
for flag in --no-convert ""; do
  for _ in 1 2 3; do
    rm -rf "$work/stop"
    # shellcheck disable=SC2086
    "$TAL" record --interval "$INTERVAL" --out "$work/stop" $flag 2>/dev/null &
    p=$!
    sleep 2
    t0=$(now_ns)
    kill -TERM "$p"
    wait "$p" || true
    t1=$(now_ns)
    if [ -n "$flag" ]; then f="$work/stop.ms"; else f="$work/stopc.ms"; fi
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f\n", (b - a) / 1e6 }' >>"$f"
  done
done
echo "| SIGTERM → exit, log finalised (median of 3) | $(median <"$work/stop.ms") ms |"
echo "| SIGTERM → exit, log finalised and JSONL written (median of 3) | $(median <"$work/stopc.ms") ms |"

# Convert throughput: 1 M events through the real writer, converted on one core.
[ -n "${TAL_BIN:-}" ] && exit 0
"./target/release/examples/genlog" "$work/gen" 1 100000 10 2 >/dev/null
log=$(ls "$work"/gen/*.tal)
: >"$work/conv.s"
: >"$work/convf.s"
TIMEFORMAT=%R
for _ in 1 2 3; do
  { time taskset -c 0 "$TAL" convert "$log" -o - >/dev/null 2>/dev/null; } 2>>"$work/conv.s"
  rm -f "$work/gen/out.jsonl"
  { time taskset -c 0 "$TAL" convert "$log" -o "$work/gen/out.jsonl" 2>/dev/null; } 2>>"$work/convf.s"
done
cs=$(median <"$work/conv.s")
cf=$(median <"$work/convf.s")
echo "| convert, 1 M events to a pipe, one core (median of 3) | ${cs} s = $(awk -v s="$cs" 'BEGIN { printf "%.2f", 1 / s }') M events/s |"
echo "| convert, 1 M events to a file, one core (median of 3) | ${cf} s = $(awk -v s="$cf" 'BEGIN { printf "%.2f", 1 / s }') M events/s (budget ≥ 1) |"
