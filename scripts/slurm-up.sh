#!/usr/bin/env bash
# Brings up a real one-node Slurm cluster on localhost for tal's tests:
# munge, slurmctld and slurmd from Debian's packages, installed if missing
# (needs root and the Debian package registry). Idempotent: if the cluster
# this script started is up, it only prints its config path. Everything
# lives under $TAL_SLURM_DIR (default /tmp/tal-slurm); the PIDs of the
# daemons it starts are kept in $TAL_SLURM_DIR/started, and
# scripts/slurm-down.sh stops exactly those.
#
# Prints the slurm.conf path on stdout: export SLURM_CONF=<it> for sbatch,
# srun, squeue and scancel.
#
# Settings follow the measured facts in SLURM-NOTES.md (beside the project):
# linuxproc process tracking, no task plugin, cons_tres by CPU, no
# accounting, KillWait=5 for fast tests, job completions in jobcomp.txt.
set -euo pipefail
D=${TAL_SLURM_DIR:-/tmp/tal-slurm}
CONF=$D/slurm.conf
log() { echo "slurm-up: $*" >&2; }

alive() { # pid: running and not a zombie
  local st
  st=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true)
  [ -n "$st" ] && [ "$st" != Z ]
}

if [ -f "$D/started" ] && [ -f "$CONF" ]; then
  ok=1
  while read -r name pid; do
    alive "$pid" || ok=0
  done <"$D/started"
  if [ $ok = 1 ] && SLURM_CONF=$CONF scontrol ping 2>/dev/null | grep -q UP; then
    echo "$CONF"
    exit 0
  fi
  log "a previous cluster under $D is not whole: stopping what is left of it"
  "$(dirname "$0")/slurm-down.sh" >&2 || true
fi

if [ "$(id -u)" != 0 ]; then
  log "needs root (to install and start munge and Slurm's daemons)"
  exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
  log "installing munge and Slurm from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  pkgs=(munge slurmctld slurmd slurm-client)
  apt-get install -y --no-install-recommends "${pkgs[@]}" >&2 ||
    { apt-get update >&2 && apt-get install -y --no-install-recommends "${pkgs[@]}" >&2; }
fi

mkdir -p "$D/state" "$D/spool"
: >"$D/started"
host=$(hostname -s)

# munge: a key, its directories, the daemon as the munge user.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
  install -d -o munge -g munge -m 0755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  rm -f /run/munge/munged.pid
  runuser -u munge -- munged
  for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  echo "munged $(cat /run/munge/munged.pid)" >>"$D/started"
  munge -n | unmunge >/dev/null
fi

# slurm.conf, with this machine's topology as slurmd sees it.
topo=$(slurmd -C | head -1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')
cat >"$CONF" <<EOF
ClusterName=tal
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/slurmctld.log
SlurmdLogFile=$D/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/jobcomp.txt
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
InactiveLimit=0
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 ${topo}RealMemory=1024 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$CONF

slurmctld -i -c -f "$CONF"
for _ in $(seq 100); do [ -s "$D/slurmctld.pid" ] && break; sleep 0.05; done
echo "slurmctld $(cat "$D/slurmctld.pid")" >>"$D/started"
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
scontrol ping | grep -q UP || { log "slurmctld did not come up; see $D/slurmctld.log"; exit 1; }

slurmd -N "$host" -f "$CONF"
for _ in $(seq 100); do [ -s "$D/slurmd.pid" ] && break; sleep 0.05; done
echo "slurmd $(cat "$D/slurmd.pid")" >>"$D/started"
for _ in $(seq 100); do
  st=$(sinfo -h -n "$host" -o %t 2>/dev/null || true)
  case "$st" in
    idle*) break ;;
    down* | drain*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
  esac
  sleep 0.1
done
sinfo -h -n "$host" -o %t | grep -q idle || { log "node $host is not idle; see $D/slurmd.log"; exit 1; }
log "one-node cluster up: node $host, config $CONF"
echo "$CONF"
