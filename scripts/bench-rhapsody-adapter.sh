#!/usr/bin/env bash
# CPU per sample of RHAPSODY's process with tal's TalAdapter against the
# same with RHAPSODY's own ConcurrentTelemetryAdapter (psutil), both at
# INTERVAL, side by side: each round runs the two idle RHAPSODY sessions
# at the same time (scripts/bench_rhapsody_adapter.py; RHAPSODY's
# checkpoint written in both), takes each Python process's CPU over SECONDS
# after a warm-up from the kernel's accounting, and divides by the
# per-node samples RHAPSODY's manager handled. Prints each round, the
# medians, the ratio (budget: TalAdapter <= 1/5 of psutil's per sample),
# and the CPU per sample of the tal agent the adapter started, beside it.
#
# Usage: [ROUNDS=3] scripts/bench-rhapsody-adapter.sh [SECONDS=60] [INTERVAL=0.1] [WARMUP=5]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
INTERVAL=${2:-0.1}
WARMUP=${3:-5}
ROUNDS=${ROUNDS:-3}

cargo build --release --quiet --bin tal
py=$(bash scripts/setup-python.sh)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
export TAL_BIN="$PWD/target/release/tal"
unset TAL_SOCKET

for r in $(seq "$ROUNDS"); do
  for mode in tal rhapsody; do
    mkdir -p "$tmp/$r/$mode"
    (cd "$tmp/$r/$mode" && "$py" "$OLDPWD/scripts/bench_rhapsody_adapter.py" \
      "$mode" "$SECS" "$WARMUP" "$INTERVAL" out >"$tmp/$r/$mode.json" 2>"$tmp/$r/$mode.err") &
  done
  wait
  for mode in tal rhapsody; do
    if ! [ -s "$tmp/$r/$mode.json" ]; then
      echo "round $r: $mode failed:" >&2
      tail -20 "$tmp/$r/$mode.err" >&2
      exit 1
    fi
    echo "round $r: $(cat "$tmp/$r/$mode.json")"
  done
done

"$py" - "$tmp" "$ROUNDS" <<'PY'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
rows = {m: [json.load(open(f"{tmp}/{r}/{m}.json")) for r in range(1, rounds + 1)] for m in ("tal", "rhapsody")}
med = lambda m, k: statistics.median(x[k] for x in rows[m])
t, p = med("tal", "python_us_per_sample"), med("rhapsody", "python_us_per_sample")
a = med("tal", "agent_us_per_sample")
print(f"RHAPSODY's process, CPU per sample (median of {rounds}): TalAdapter {t:.1f} us, "
      f"ConcurrentTelemetryAdapter {p:.1f} us; ratio {t / p:.3f} (budget <= 0.2: "
      f"{'met' if t <= p / 5 else 'NOT met'})")
print(f"tal agent beside it: {a:.1f} us per sample")
PY
