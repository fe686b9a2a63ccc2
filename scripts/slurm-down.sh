#!/usr/bin/env bash
# Stops exactly the daemons scripts/slurm-up.sh started (the PIDs in
# $TAL_SLURM_DIR/started), newest first, removes the network namespaces,
# links and per-node cgroups it made (listed in $TAL_SLURM_DIR/net), and
# removes that directory.
# A daemon already gone is fine; PID 1 on these machines reaps late, so a
# zombie counts as gone.
set -uo pipefail
D=${TAL_SLURM_DIR:-/tmp/tal-slurm}
[ -f "$D/started" ] || exit 0
# Not while slurm-up.sh brings a cluster up (unless it is what called us).
if [ -z "${TAL_SLURM_LOCKED:-}" ]; then
  exec 9>/tmp/tal-slurm-up.lock
  flock 9
fi
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
# The network namespaces and links of a multi-node cluster, newest first.
if [ -f "$D/net" ]; then
  tac "$D/net" | while read -r kind name; do
    case "$kind" in
      netns) ip netns del "$name" 2>/dev/null || true ;;
      link) ip link del "$name" 2>/dev/null || true ;;
      # A node's cgroup, with what Slurm left under it, deepest first.
      cgroup) [ -d "$name" ] && find "$name" -depth -type d -exec rmdir {} + 2>/dev/null || true ;;
    esac
  done
fi
rm -rf "$D"
echo "slurm-down: stopped" >&2
