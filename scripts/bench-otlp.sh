#!/usr/bin/env bash
# OTLP export benchmark: a recorded session with TASKS tasks (four lifecycle
# events each, sent to a real agent's socket), converted to JSONL, then
#   - built as OTLP and written as OTLP JSON files (no network), and
#   - pushed as OTLP/HTTP protobuf to the real receiver of the tests
#     (scripts/otlp_receiver.py --count-only: it decodes every request with
#     the official protobuf definitions, and counts what arrived),
# each RUNS times; prints medians and spans/s.
# Usage: scripts/bench-otlp.sh [TASKS=100000] [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${1:-100000}
RUNS=${2:-3}
cargo build --release --quiet --bin tal
py=$(scripts/setup-python.sh)
TAL=$PWD/target/release/tal
work=$(mktemp -d)
rx=""
cleanup() { [ -n "$rx" ] && kill "$rx" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$TAL" record --interval 0.1 --session-id bench.otlp --node-id n1 --out "$work/rec" --socket "$work/s.sock" 2>/dev/null &
agent=$!
while [ ! -S "$work/s.sock" ]; do sleep 0.05; done
"$py" - "$work/s.sock" "$TASKS" <<'PY'
import socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
t = time.time()
lines = []
for i in range(n):
    for k, ev in enumerate(("TaskCreated", "TaskSubmitted", "TaskStarted", "TaskCompleted")):
        lines.append('{"event_type": "%s", "task_id": "task.%07d", "event_time": %.6f, "backend": "bench", '
                     '"attributes": {"executable": "/bin/true", "task_type": "ComputeTask"}}\n'
                     % (ev, i, t + i * 1e-4 + k * 1e-5))
data = "".join(lines).encode()
s = socket.socket(socket.AF_UNIX); s.connect(path)
for i in range(0, len(data), 1 << 18):
    s.sendall(data[i:i + (1 << 18)])
s.sendall(b'{"op": "ping"}\n'); s.makefile("rb").readline()
PY
"$TAL" stop --socket "$work/s.sock" >/dev/null
wait "$agent" || true
jsonl=$(ls "$work"/rec/*.telemetry.jsonl)
spans=$(grep -c '"section": "span"' "$jsonl")

"$py" scripts/otlp_receiver.py serve "$work/rx.jsonl" --port-file "$work/port" --count-only &
rx=$!
while [ ! -s "$work/port" ]; do sleep 0.05; done
url="http://127.0.0.1:$(cat "$work/port")"
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
: >"$work/files.s"; : >"$work/push.s"
for _ in $(seq 1 "$RUNS"); do
  t0=$(date +%s%N)
  "$TAL" convert "$jsonl" --format otlp-json -o "$work/x" 2>/dev/null
  t1=$(date +%s%N)
  : >"$work/rx.jsonl"
  "$TAL" convert "$jsonl" --otlp-endpoint "$url" 2>"$work/push.err"
  t2=$(date +%s%N)
  echo "$(( (t1 - t0) / 1000000 ))" >>"$work/files.s"
  echo "$(( (t2 - t1) / 1000000 ))" >>"$work/push.s"
done
got=$("$py" -c "import json,sys; print(sum(json.loads(l).get('spans',0) for l in open(sys.argv[1])))" "$work/rx.jsonl")
fm=$(median <"$work/files.s"); pm=$(median <"$work/push.s")
echo "# OTLP export: $spans spans (${TASKS} tasks + session) and their metrics, $RUNS runs, $(nproc) CPUs"
echo "| measure | value |"
echo "| --- | --- |"
echo "| JSONL → OTLP JSON files (median) | ${fm} ms = $(awk -v s="$spans" -v m="$fm" 'BEGIN { printf "%.0f", s / m * 1000 }') spans/s |"
echo "| JSONL → OTLP/HTTP push to the local receiver, decoded there (median) | ${pm} ms = $(awk -v s="$spans" -v m="$pm" 'BEGIN { printf "%.0f", s / m * 1000 }') spans/s |"
echo "| spans the receiver decoded (last run) | $got of $spans |"
tail -1 "$work/push.err"
