#!/usr/bin/env bash
# Screenshots of `tal report` in headless Chromium, 1600 px wide, for the
# documentation (docs/img/): the small workflow of the tests' fixture
# (tests/fixtures/small-workflow), RHAPSODY's reference checkpoint, and
# 256 nodes from the benchmark generator (examples/genlog) over 30 s with
# six tasks a node. The tests keep full-page screenshots of their own
# cases under target/ (see tests/common/mod.rs, assert_renders); these
# are the top of each page, kept small.
# Usage: scripts/report-screenshots.sh [OUT_DIR=docs/img] [HEIGHT=1400]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/img}
height=${2:-1400}
chromium=$(command -v chromium || command -v chromium-browser || true)
[ -n "$chromium" ] || { echo "chromium is needed (Debian: apt-get install chromium)" >&2; exit 1; }
cargo build --release --quiet --bin tal --example genlog
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
tal=./target/release/tal
$tal report tests/fixtures/small-workflow/*.tal -o "$work/small-workflow.html" 2>/dev/null
$tal report tests/fixtures/rhapsody-0.6.0-tasks.telemetry.jsonl -o "$work/rhapsody-checkpoint.html" 2>/dev/null
./target/release/examples/genlog "$work/logs" 256 30 10 2 bench.session 6 >/dev/null
$tal report "$work"/logs/*.tal -o "$work/256-nodes.html" 2>/dev/null
for name in small-workflow rhapsody-checkpoint 256-nodes; do
  "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --host-resolver-rules='MAP * ~NOTFOUND' --hide-scrollbars \
    --user-data-dir="$work/profile" --virtual-time-budget=5000 \
    --window-size=1600,"$height" --screenshot="$out/report-$name.png" \
    "file://$work/$name.html" >/dev/null 2>&1
  echo "$out/report-$name.png: $(du -k "$out/report-$name.png" | cut -f1) KiB"
done
