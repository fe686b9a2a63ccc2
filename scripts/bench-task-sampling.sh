#!/usr/bin/env bash
# What sampling tasks costs (`tal.TaskResourceUpdate`, src/agent/tasks.rs),
# measured side by side in one run.
#
# Starts TASKS process trees of PROCS processes each (a shell and its
# sleeping children: what is read per process does not depend on what the
# process does), then two agents at once, pinned to the same CPU, with the
# same --interval and --task-interval:
#   - "tasks": each tree is a task of it (a TaskStarted naming the tree's
#     pid, sent to its socket as a runtime would);
#   - "none": no task at all.
# CPU time comes from the kernel's accounting of every thread
# (/proc/PID/task/*/sched), over WINDOWS equal windows after a warm-up,
# alternating which agent starts first each round. Also run beside them:
# examples/floor's empty thread waking on the task interval's deadlines
# (one wake-up's own cost), and examples/task_floor, which makes the reads
# tal makes of a process that ran (three CPU clocks, statm, io, children,
# an fstat of task/) for every one of the processes once per task interval
# and does nothing else (the reads' own cost, cold as they are once a
# second).
#
# Printed, as medians of the windows: each agent's CPU per second, the
# difference (everything tasks cost: the sampler, the dispatcher's events,
# the log), the task thread's CPU per task sample round, and that beyond
# one wake-up per process per task sample (budget: <= 5 µs), and the node
# sampler's jitter in each agent (it must not change).
#
# With ACTIVE=1 the children (the first ACTIVE_KIDS of each tree, default
# all) are not asleep but wake every ACTIVE_PERIOD seconds (default 0.01;
# perl's select), so that each has run between any two samples: every
# file of every process is read at every sample (with all children, the
# worst case; an idle process costs one CPU clock read, see
# src/agent/tasks.rs). tal reads `children` files only in rounds after a
# pid was handed out on the node; with FORKING=1 a loop on the other CPU
# starts a process every 50 ms, so that every round reads them too (the
# worst case of a node where processes come and go). At 0.01 s the
# wake-ups also keep the CPU's caches cold for the agents; a longer period
# (shorter than the task interval) measures the reads without that.
#
# With PSUTIL=1, scripts/psutil_tasks.py also runs beside them, twice: the
# same tasks sampled as a Python runtime would with psutil (descendants,
# CPU times, memory, threads, I/O of each process, once per task
# interval), and given every pid (the reads alone), in PSUTIL_PYTHON
# (default: the test suite's target/pyenv, which has psutil).
#
# With OLD_TAL=PATH (another build of tal, e.g. of an earlier commit), a
# third agent runs that binary with the same tasks, at the same time, and
# its task thread is printed beside this one's: a change's effect, side by
# side.
#
# Usage: [BIN_DIR=DIR] [OLD_TAL=PATH] [PSUTIL=1] [TASKS=64] [PROCS=4] [ROUNDS=2] [ACTIVE=1] [ACTIVE_KIDS=N] [ACTIVE_PERIOD=0.01] [FORKING=1] scripts/bench-task-sampling.sh [SECONDS=40] [TASK_INTERVAL=1] [WINDOWS=4]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-40}
TINT=${2:-1}
WINDOWS=${3:-4}
TASKS=${TASKS:-64}
PROCS=${PROCS:-4}
ROUNDS=${ROUNDS:-2}
INTERVAL=0.1
# BIN_DIR: prebuilt tal, floor and task_floor (a machine without cargo).
if [ -n "${BIN_DIR:-}" ]; then
  TAL=$BIN_DIR/tal FLOOR_BIN=$BIN_DIR/floor TASK_FLOOR_BIN=$BIN_DIR/task_floor
else
  cargo build --release --quiet --bin tal --example floor --example task_floor
  TAL=./target/release/tal FLOOR_BIN=./target/release/examples/floor TASK_FLOOR_BIN=./target/release/examples/task_floor
fi
work=$(mktemp -d)
pids=()
roots=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for r in "${roots[@]}" ${forker:-}; do pkill -TERM -P "$r" 2>/dev/null || true; kill -TERM "$r" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cpu_of() { # pid [thread name]: on-CPU ns of every thread, or of that one
  local t sum=0 v
  for t in /proc/"$1"/task/*; do
    if [ -z "${2:-}" ] || [ "$(cat "$t/comm" 2>/dev/null)" = "$2" ]; then
      v=$(awk '/se.sum_exec_runtime/ { printf "%.0f", $3 * 1e6 }' "$t/sched" 2>/dev/null || echo 0)
      sum=$((sum + ${v:-0}))
    fi
  done
  echo "$sum"
}
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "# task sampling: $TASKS tasks of $PROCS processes (children $([ "${ACTIVE:-0}" = 1 ] && echo "waking every ${ACTIVE_PERIOD:-0.01} s${ACTIVE_KIDS:+, $ACTIVE_KIDS per tree}" || echo asleep)$([ "${FORKING:-0}" = 1 ] && echo ", a process started every 50 ms")), --task-interval ${TINT}s, --interval ${INTERVAL}s, ${SECS}s in ${ROUNDS} rounds x ${WINDOWS} windows, $(nproc) CPUs, $(uname -r)" >&2
# The process trees: `sh` and PROCS-1 sleeping children each.
for i in $(seq "$TASKS"); do
  busy="perl -e 'select(undef, undef, undef, ${ACTIVE_PERIOD:-0.01}) while 1' & "
  kids=$(for k in $(seq $((PROCS - 1))); do
    if [ "${ACTIVE:-0}" = 1 ] && [ "$k" -le "${ACTIVE_KIDS:-$PROCS}" ]; then printf '%s' "$busy"; else printf '%s' 'sleep 100000 & '; fi
  done)
  sh -c "$kids wait" "tal-bench-tree $work" &
  roots+=($!)
done
if [ "${FORKING:-0}" = 1 ]; then
  taskset -c 0 sh -c 'while :; do /bin/true; perl -e "select(undef, undef, undef, 0.05)"; done' &
  forker=$!
fi
sleep 0.5
all=("${roots[@]}")
for r in "${roots[@]}"; do while read -r c; do all+=("$c"); done < <(pgrep -P "$r"); done
cpu=$(($(nproc) - 1))
window=$(awk -v s="$SECS" -v w="$WINDOWS" -v r="$ROUNDS" 'BEGIN { printf "%.3f", s / w / r }')
for f in with none thread wake floor old psutil psknown jit_with jit_none; do : >"$work/r.$f"; done
printf '%-6s %-7s %14s %14s %12s %16s %12s %14s\n' round window "tasks µs/s" "none µs/s" "diff µs/s" "thread µs/round" "wake µs" "reads µs/round" >&2
for round in $(seq "$ROUNDS"); do
  start() { # name [binary]
    rm -rf "$work/$1"
    taskset -c "$cpu" "${2:-$TAL}" record --interval "$INTERVAL" --task-interval "$TINT" --pin none \
      --out "$work/$1" --session-id "bench.$1" --node-id n1 --socket "$work/$1.sock" 2>"$work/$1.err" &
    eval "PID_$1=$!"
    pids+=($!)
    while [ ! -S "$work/$1.sock" ]; do sleep 0.05; done
  }
  if [ $((round % 2)) = 1 ]; then start with; start none; else start none; start with; fi
  socks=("$work/with.sock")
  if [ -n "${OLD_TAL:-}" ]; then start old "$OLD_TAL"; socks+=("$work/old.sock"); fi
  FLOOR_WAKE_THREAD=1 taskset -c "$cpu" "$FLOOR_BIN" "$TINT" 2>/dev/null &
  FLOOR=$!
  pids+=("$FLOOR")
  taskset -c "$cpu" "$TASK_FLOOR_BIN" "$TINT" "${all[@]}" &
  TFLOOR=$!
  pids+=("$TFLOOR")
  if [ "${PSUTIL:-0}" = 1 ]; then
    taskset -c "$cpu" "${PSUTIL_PYTHON:-target/pyenv/bin/python}" scripts/psutil_tasks.py "$TINT" "${roots[@]}" &
    PSU=$!
    pids+=("$PSU")
    taskset -c "$cpu" "${PSUTIL_PYTHON:-target/pyenv/bin/python}" scripts/psutil_tasks.py --known "$TINT" "${all[@]}" &
    PSK=$!
    pids+=("$PSK")
  fi
  # The trees become tasks of "with" (and "old"), as a runtime would say so.
  for sock in "${socks[@]}"; do
    python3 - "$sock" "${roots[@]}" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
for i, pid in enumerate(sys.argv[2:]):
    s.sendall((json.dumps({"event_type": "TaskStarted", "task_id": "bench.%d" % i, "attributes": {"pid": int(pid)}}) + "\n").encode())
s.sendall(b'{"op": "ping"}\n')
s.recv(4096)
EOF
  done
  sleep 3
  for w in $(seq "$WINDOWS"); do
    t0=$(date +%s%N)
    a0=$(cpu_of "$PID_with"); b0=$(cpu_of "$PID_none"); h0=$(cpu_of "$PID_with" tal-tasks); f0=$(cpu_of "$FLOOR" floor-wake); r0=$(cpu_of "$TFLOOR" task-floor); o0=$([ -n "${OLD_TAL:-}" ] && cpu_of "$PID_old" tal-tasks || echo 0); p0=$([ "${PSUTIL:-0}" = 1 ] && cpu_of "$PSU" || echo 0); q0=$([ "${PSUTIL:-0}" = 1 ] && cpu_of "$PSK" || echo 0)
    sleep "$window"
    t1=$(date +%s%N)
    a1=$(cpu_of "$PID_with"); b1=$(cpu_of "$PID_none"); h1=$(cpu_of "$PID_with" tal-tasks); f1=$(cpu_of "$FLOOR" floor-wake); r1=$(cpu_of "$TFLOOR" task-floor); o1=$([ -n "${OLD_TAL:-}" ] && cpu_of "$PID_old" tal-tasks || echo 0); p1=$([ "${PSUTIL:-0}" = 1 ] && cpu_of "$PSU" || echo 0); q1=$([ "${PSUTIL:-0}" = 1 ] && cpu_of "$PSK" || echo 0)
    awk -v o=$((q1 - q0)) -v t=$((t1 - t0)) -v i="$TINT" 'BEGIN { printf "%.1f\n", o / 1e3 / (t / 1e9 / i) }' >>"$work/r.psknown"
    awk -v o=$((p1 - p0)) -v t=$((t1 - t0)) -v i="$TINT" 'BEGIN { printf "%.1f\n", o / 1e3 / (t / 1e9 / i) }' >>"$work/r.psutil"
    awk -v o=$((o1 - o0)) -v t=$((t1 - t0)) -v i="$TINT" 'BEGIN { printf "%.1f\n", o / 1e3 / (t / 1e9 / i) }' >>"$work/r.old"
    read -r ua ub ud uh uw uf < <(awk -v a=$((a1 - a0)) -v b=$((b1 - b0)) -v h=$((h1 - h0)) -v f=$((f1 - f0)) -v x=$((r1 - r0)) -v t=$((t1 - t0)) -v i="$TINT" \
      'BEGIN { s = t / 1e9; r = s / i; printf "%.1f %.1f %.1f %.1f %.2f %.1f\n", a / 1e3 / s, b / 1e3 / s, (a - b) / 1e3 / s, h / 1e3 / r, f / 1e3 / r, x / 1e3 / r }')
    echo "$ua" >>"$work/r.with"; echo "$ub" >>"$work/r.none"; echo "$uh" >>"$work/r.thread"; echo "$uw" >>"$work/r.wake"; echo "$uf" >>"$work/r.floor"
    printf '%-6s %-7s %14s %14s %12s %16s %12s %14s\n' "$round" "$w" "$ua" "$ub" "$ud" "$uh" "$uw" "$uf" >&2
  done
  kill -TERM "$PID_with" "$PID_none" "$FLOOR" "$TFLOOR" ${OLD_TAL:+"$PID_old"} ${PSU:+"$PSU" "$PSK"}
  wait "$PID_with" "$PID_none" "$FLOOR" "$TFLOOR" ${OLD_TAL:+"$PID_old"} ${PSU:+"$PSU" "$PSK"} 2>/dev/null || true
  pids=()
  for a in with none; do
    python3 -c "
import json, sys, glob
m = [json.loads(l) for l in open(glob.glob(sys.argv[1] + '/*.telemetry.jsonl')[0]) if '\"section\": \"metric\"' in l][0]
print(m['agent_sampling_jitter_p99_ms'], m.get('task_samples_taken', 0), m.get('task_samples_dropped', 0))" "$work/$a" >>"$work/r.jit_$a"
  done
done
wm=$(median <"$work/r.with"); nm=$(median <"$work/r.none"); hm=$(median <"$work/r.thread"); km=$(median <"$work/r.wake")
per=$(awk -v h="$hm" -v k="$km" -v n=$((TASKS * PROCS)) 'BEGIN { printf "%.2f", (h - k) / n }')
echo
echo "| measure ($TASKS tasks × $PROCS processes, --task-interval ${TINT}s) | value |"
echo "| --- | --- |"
echo "| agent CPU with the tasks / without (medians of windows) | ${wm} / ${nm} µs per s |"
echo "| what the tasks cost the whole agent (difference of medians) | $(awk -v a="$wm" -v b="$nm" 'BEGIN { printf "%.1f µs per s = %.3f %% of a core", a - b, (a - b) / 1e4 }') |"
echo "| task thread (tal-tasks) per task sample round | ${hm} µs |"
echo "| an empty thread's wake-up on the same deadlines (floor-wake) | ${km} µs |"
echo "| task thread beyond its wake-up, per process per task sample | ${per} µs (budget ≤ 5) |"
xm=$(median <"$work/r.floor")
echo "| the reads alone (task_floor: the CPU clocks, statm, io, children and task/ of each of the ${#all[@]} processes, once per interval), per process | $(awk -v x="$xm" -v k="$km" -v n="${#all[@]}" 'BEGIN { printf "%.2f", (x - k) / n }') µs; tal's task thread / this: $(awk -v h="$hm" -v x="$xm" 'BEGIN { printf "%.2f", h / x }') |"
echo "| node sampler jitter p99 with the tasks / without, per round | $(cut -d' ' -f1 "$work/r.jit_with" | paste -sd, -) / $(cut -d' ' -f1 "$work/r.jit_none" | paste -sd, -) ms |"
echo "| task samples taken / dropped (agent with the tasks, per round) | $(cut -d' ' -f2,3 "$work/r.jit_with" | tr ' ' / | paste -sd, -) |"
if [ -n "${OLD_TAL:-}" ]; then
  om=$(median <"$work/r.old")
  echo "| $OLD_TAL's task thread per round, beside it; beyond its wake-up per process | ${om} µs; $(awk -v o="$om" -v k="$km" -v n=$((TASKS * PROCS)) 'BEGIN { printf "%.2f", (o - k) / n }') µs; this tal / that: $(awk -v h="$hm" -v o="$om" 'BEGIN { printf "%.2f", h / o }') |"
fi
if [ "${PSUTIL:-0}" = 1 ]; then
  pm=$(median <"$work/r.psutil")
  km2=$(median <"$work/r.psknown")
  echo "| psutil (scripts/psutil_tasks.py: children(recursive=True) of each task's root, then each process) per round, beside it; per process | ${pm} µs; $(awk -v p="$pm" -v n=$((TASKS * PROCS)) 'BEGIN { printf "%.2f", p / n }') µs; psutil / tal's task thread: $(awk -v h="$hm" -v p="$pm" 'BEGIN { printf "%.1f", p / h }') |"
  echo "| psutil given every pid (--known: the reads alone, no descendants looked for) per round; per process | ${km2} µs; $(awk -v p="$km2" -v n=$((TASKS * PROCS)) 'BEGIN { printf "%.2f", p / n }') µs; psutil / tal's task thread: $(awk -v h="$hm" -v p="$km2" 'BEGIN { printf "%.1f", p / h }') |"
fi
