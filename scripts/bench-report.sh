#!/usr/bin/env bash
# Report scale check (issue: a 256-node, one-hour, 10 Hz run opens in a
# browser in a few seconds, in a file of at most 25 MB): NODES node logs of
# SECONDS at 10 Hz (examples/genlog, as scripts/bench-merge.sh makes them),
# merged once to JSONL, then `tal report` of that JSONL and of the logs
# themselves: wall time, peak RSS and the file's size; then the time
# headless Chromium takes to load the page and finish its script, next to
# its time for an empty page (its own start-up), when chromium is there.
# Usage: scripts/bench-report.sh [NODES=256] [SECONDS=3600]
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-256}
SECS=${2:-3600}
cargo build --release --quiet --bin tal --example genlog
work=${BENCH_DIR:-$(mktemp -d)}
trap '[ -z "${BENCH_DIR:-}" ] && rm -rf "$work"' EXIT
echo "# generating $NODES node logs x ${SECS} s at 10 Hz ..." >&2
./target/release/examples/genlog "$work/logs" "$NODES" "$SECS" 10 2 >/dev/null
./target/release/tal convert "$work"/logs/*.tal -o "$work/run.jsonl" 2>/dev/null
events=$((NODES * SECS * 10))
echo "# report: $NODES nodes x ${SECS} s at 10 Hz = $events events ($(du -m "$work/run.jsonl" | cut -f1) MB of JSONL), $(nproc) CPUs"
echo "| measure | value |"
echo "| --- | --- |"
measure() { # label, input...
  local label=$1
  shift
  /usr/bin/time -f '%e %M' -o "$work/time" ./target/release/tal report "$@" -o "$work/r.html" 2>/dev/null
  read -r secs kib <"$work/time"
  echo "| tal report of $label | ${secs} s, peak RSS $((kib / 1024)) MiB, $(du -k "$work/r.html" | awk '{ printf "%.1f", $1 / 1024 }') MiB of HTML |"
}
measure "the JSONL" "$work/run.jsonl"
measure "the node logs" "$work"/logs/*.tal
if [ -x /usr/bin/chromium ]; then
  load() { # page
    local t0 t1
    t0=$(date +%s%N)
    /usr/bin/chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
      --disable-background-networking --disable-component-update --disable-sync \
      --user-data-dir="$work/profile" --window-size=1400,2000 --dump-dom "file://$1" >"$work/dom" 2>/dev/null
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000000 ))
  }
  echo '<!DOCTYPE html><html><body data-tal-ready="0"></body></html>' >"$work/empty.html"
  empty=$(load "$work/empty.html")
  page=$(load "$work/r.html")
  grep -q 'data-tal-ready="[1-9]' "$work/dom" || { echo "the report's script did not finish" >&2; exit 1; }
  echo "| headless Chromium: load the report and run its script | ${page} ms (an empty page: ${empty} ms) |"
fi
