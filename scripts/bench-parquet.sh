#!/usr/bin/env bash
# The Parquet dataset at scale (issue: runs of a thousand nodes): NODES node
# logs of SECONDS at 10 Hz with TASKS tasks each (examples/genlog), then,
# side by side in one run:
# - `tal convert` to one JSONL file, and `tal convert --format parquet` to a
#   dataset: wall time, peak RSS, bytes (and bytes per sample);
# - one node's parts alone (what `tal record --format parquet` does at the
#   end of a node's recording): wall time;
# - `tal summary` and `tal report` of the logs and of the dataset: wall
#   time and peak RSS (and whether the two reports, and the two summaries'
#   --json, are the same);
# - DuckDB (the test venv's) over the dataset and over the JSONL
#   (`read_json`) answering "p50/p99/max CPU and peak memory per node" and
#   "the ten longest tasks": wall time of each query, best of 3.
# With NOJSONL=1 (for 1,000 nodes and more, whose JSONL would be tens of
# GB), the JSONL steps and queries are left out.
# Usage: scripts/bench-parquet.sh [NODES=256] [SECONDS=3600] [TASKS=100]
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-256}
SECS=${2:-3600}
TASKS=${3:-100}
cargo build --release --quiet --bin tal --example genlog
py=$(bash scripts/setup-python.sh)
work=${BENCH_DIR:-$(mktemp -d)}
trap '[ -z "${BENCH_DIR:-}" ] && rm -rf "$work"' EXIT
echo "# generating $NODES node logs x ${SECS} s at 10 Hz with $TASKS tasks each ..." >&2
rm -rf "$work/logs" "$work/ds" "$work/one" "$work/run.jsonl"
./target/release/examples/genlog "$work/logs" "$NODES" "$SECS" 10 2 bench.session "$TASKS" >/dev/null
samples=$((NODES * SECS * 10))
echo "# $NODES nodes x ${SECS} s at 10 Hz = $samples samples, $((NODES * TASKS)) tasks; $(nproc) CPUs"
echo "| measure | value |"
echo "| --- | --- |"
timed() { # label, command...
  local label=$1
  shift
  /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>/dev/null
  read -r secs kib <"$work/time"
  echo "| $label | ${secs} s, peak RSS $((kib / 1024)) MiB |"
}
if [ -z "${NOJSONL:-}" ]; then
  echo "# tal convert to JSONL ..." >&2
  timed "tal convert to one JSONL file" ./target/release/tal convert -q "$work"/logs/*.tal -o "$work/run.jsonl"
fi
echo "# tal convert --format parquet ..." >&2
timed "tal convert --format parquet (all logs)" ./target/release/tal convert -q "$work"/logs/*.tal --format parquet -o "$work/ds"
logs=("$work"/logs/*.tal)
first=${logs[0]}
timed "one node's parts (${SECS} s of one node, as tal record --format parquet ends)" \
  ./target/release/tal convert -q "$first" --format parquet -o "$work/one"
db=$(du -sb "$work/ds" | cut -f1)
sb=$(du -sb "$work/ds/samples" | cut -f1)
lb=$(du -sb "$work/logs" | cut -f1)
echo "| node logs | $((lb / 1048576)) MiB |"
ratio=""
if [ -z "${NOJSONL:-}" ]; then
  jb=$(stat -c %s "$work/run.jsonl")
  echo "| JSONL | $((jb / 1048576)) MiB, $((jb / samples)) bytes per sample |"
  ratio="$(awk -v a="$jb" -v b="$db" 'BEGIN { printf "1/%.1f", a / b }') of the JSONL, "
fi
echo "| dataset | $((db / 1048576)) MiB (${ratio}$(awk -v s="$db" -v n="$samples" 'BEGIN { printf "%.1f", s / n }') bytes per sample in all), samples table $(awk -v s="$sb" -v n="$samples" 'BEGIN { printf "%.1f", s / n }') bytes per sample |"
echo "# tal summary and tal report, from the logs and from the dataset ..." >&2
timed "tal summary of the logs" ./target/release/tal summary -q "$work/logs"
timed "tal summary of the dataset" ./target/release/tal summary -q "$work/ds"
timed "tal report of the logs" ./target/release/tal report -q "$work/logs" -o "$work/logs.html"
timed "tal report of the dataset" ./target/release/tal report -q "$work/ds" -o "$work/ds.html"
if cmp -s "$work/logs.html" "$work/ds.html"; then
  echo "| the two reports | the same, byte for byte |"
else
  echo "| the two reports | DIFFER |"
fi
./target/release/tal summary --json -q "$work/logs" >"$work/logs.json"
./target/release/tal summary --json -q "$work/ds" >"$work/ds.json"
if cmp -s "$work/logs.json" "$work/ds.json"; then
  echo "| the two summaries (--json) | the same, byte for byte |"
else
  echo "| the two summaries (--json) | DIFFER |"
fi
[ -n "${NOJSONL:-}" ] && exit 0
echo "# DuckDB queries ..." >&2
"$py" - "$work" <<'PY'
import sys, time, duckdb
w = sys.argv[1]
ds = f"{w}/ds"
js = f"read_json('{w}/run.jsonl', format='newline_delimited', columns={{section: 'VARCHAR', name: 'VARCHAR', event_type: 'VARCHAR', resource_scope: 'VARCHAR', node_id: 'VARCHAR', cpu_percent: 'DOUBLE', memory_percent: 'DOUBLE', attributes: 'JSON', start_ns: 'BIGINT', end_ns: 'BIGINT', duration_ms: 'DOUBLE'}})"
queries = {
    "p50/p99/max CPU and peak memory per node": (
        f"select node, quantile_cont(cpu_percent, 0.5), quantile_cont(cpu_percent, 0.99), max(cpu_percent), max(memory_percent) from read_parquet('{ds}/samples/*/*.parquet', hive_partitioning=true) group by node",
        f"select node_id, quantile_cont(cpu_percent, 0.5), quantile_cont(cpu_percent, 0.99), max(cpu_percent), max(memory_percent) from {js} where event_type = 'ResourceUpdate' and resource_scope = 'per_node' group by node_id",
    ),
    "the ten longest tasks": (
        f"select task_id, node, duration_ms from read_parquet('{ds}/tasks/*/*.parquet', hive_partitioning=true) order by duration_ms desc, task_id limit 10",
        f"select attributes->>'task_id' as task_id, duration_ms from {js} where section = 'span' and name = 'task' order by duration_ms desc, task_id limit 10",
    ),
}
con = duckdb.connect()
def best(q, n):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        rows = con.sql(q).fetchall()
        ts.append(time.perf_counter() - t0)
    return min(ts), len(rows)
for name, (over_ds, over_js) in queries.items():
    a, ra = best(over_ds, 3)
    b, rb = best(over_js, 1)
    assert ra == rb, (name, ra, rb)
    print(f"| DuckDB: {name} | dataset {a:.2f} s, JSONL (read_json) {b:.2f} s: {b / a:.0f}x |")
PY
