#!/usr/bin/env bash
# The agent's per-sample overhead measured inside a real Slurm job step:
# scripts/bench-overhead.sh (tal against the bare-read floor, side by side,
# same ratio method) run as a batch job on the one-node cluster of
# scripts/slurm-up.sh (started here if it is not up, and stopped again
# afterwards in that case). tal then runs with the job's environment
# (session slurm.<job>, node $SLURMD_NODENAME, the job's CPU binding).
# Usage: scripts/bench-slurm.sh [SECONDS=60] [INTERVAL=0.1] [WINDOWS=6]
set -euo pipefail
cd "$(dirname "$0")/.."
D=${TAL_SLURM_DIR:-/tmp/tal-slurm}
[ -f "$D/started" ] && was_up=1 || was_up=0
conf=$(scripts/slurm-up.sh)
[ $was_up = 1 ] || trap 'scripts/slurm-down.sh' EXIT
export SLURM_CONF=$conf
cargo build --release --quiet --bin tal --example floor --example genlog
out=$(mktemp)
job=$(sbatch --parsable -N1 -n1 -c2 -o "$out" --wrap "cd $PWD && ROUNDS=${ROUNDS:-2} scripts/bench-overhead.sh ${1:-60} ${2:-0.1} ${3:-6}")
while squeue -h -j "$job" | grep -q .; do sleep 2; done
echo "# inside Slurm job $job (batch step): $(grep -o 'JobState=[A-Z_]*' "$D/jobcomp.txt" 2>/dev/null | tail -1)"
cat "$out"
rm -f "$out"
