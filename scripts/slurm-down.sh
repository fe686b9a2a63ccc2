#!/usr/bin/env bash
# Stops exactly the daemons scripts/slurm-up.sh started (the PIDs in
# $TAL_SLURM_DIR/started), newest first, and removes that directory.
# A daemon already gone is fine; PID 1 on these machines reaps late, so a
# zombie counts as gone.
set -uo pipefail
D=${TAL_SLURM_DIR:-/tmp/tal-slurm}
[ -f "$D/started" ] || exit 0
alive() {
  local st
  st=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true)
  [ -n "$st" ] && [ "$st" != Z ]
}
tac "$D/started" | while read -r name pid; do
  # Only a process that is still that daemon.
  if alive "$pid" && grep -q "$name" "/proc/$pid/comm" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
done
rm -rf "$D"
echo "slurm-down: stopped" >&2
