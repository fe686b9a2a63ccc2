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
#
# --nodes N (N > 1): N nodes on this one machine, each a slurmd of its own
# in its own network namespace (`ip netns` taln1..taln<N>, joined by veth
# pairs to a bridge talbr0) and its own UTS namespace (host name
# taln<i>), with its own spool directory, PID file and log. The bridge has
# $TAL_SLURM_NET.1 (slurmctld's address; default net 10.77.0, a private
# range), node i has $TAL_SLURM_NET.(10+i); traffic stays on these
# addresses. slurmctld listens on port 6827 (so that a one-node cluster
# can run beside it on 6817); the slurmds share the machine's file
# systems, its munge and its clock. One multi-node cluster at a time.
# slurm-down.sh removes the namespaces and links as well.
set -euo pipefail
NODES=1
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=$2; shift 2 ;;
    --nodes=*) NODES=${1#--nodes=}; shift ;;
    *) echo "slurm-up: unknown argument $1 (usage: slurm-up.sh [--nodes N])" >&2; exit 2 ;;
  esac
done
case "$NODES" in '' | *[!0-9]* | 0) echo "slurm-up: --nodes needs a positive number" >&2; exit 2 ;; esac
NET=${TAL_SLURM_NET:-10.77.0}
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
: >"$D/net"
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
if [ "$NODES" = 1 ]; then
  ctld_addr=127.0.0.1 ctld_port=6817 per_node=
  nodes_conf="NodeName=$host NodeAddr=127.0.0.1 ${topo}RealMemory=1024 State=UNKNOWN"
  partition_nodes=$host
else
  ctld_addr=$NET.1 ctld_port=6827 per_node=.%n
  nodes_conf=$(for i in $(seq "$NODES"); do
    echo "NodeName=taln$i NodeAddr=$NET.$((10 + i)) ${topo}RealMemory=1024 State=UNKNOWN"
  done)
  partition_nodes="taln[1-$NODES]"
  # The nodes' network: a bridge with slurmctld's address, one namespace
  # and veth pair per node. Each is noted in $D/net as soon as it exists,
  # for slurm-down.sh.
  log "making $NODES nodes' network namespaces on bridge talbr0 ($NET.0/24)"
  ip link add talbr0 type bridge
  echo "link talbr0" >>"$D/net"
  ip addr add "$NET.1/24" dev talbr0
  ip link set talbr0 up
  for i in $(seq "$NODES"); do
    ip netns add "taln$i"
    echo "netns taln$i" >>"$D/net"
    ip link add "talv$i" type veth peer name eth0 netns "taln$i"
    echo "link talv$i" >>"$D/net"
    ip link set "talv$i" master talbr0 up
    ip -n "taln$i" addr add "$NET.$((10 + i))/24" dev eth0
    ip -n "taln$i" link set eth0 up
    ip -n "taln$i" link set lo up
    mkdir -p "$D/spool.taln$i"
  done
fi
cat >"$CONF" <<EOF
ClusterName=tal
SlurmctldHost=$host($ctld_addr)
SlurmctldPort=$ctld_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool$per_node
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd$per_node.pid
SlurmctldLogFile=$D/slurmctld.log
SlurmdLogFile=$D/slurmd$per_node.log
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
$nodes_conf
PartitionName=debug Nodes=$partition_nodes Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$CONF

slurmctld -i -c -f "$CONF"
for _ in $(seq 100); do [ -s "$D/slurmctld.pid" ] && break; sleep 0.05; done
echo "slurmctld $(cat "$D/slurmctld.pid")" >>"$D/started"
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
scontrol ping | grep -q UP || { log "slurmctld did not come up; see $D/slurmctld.log"; exit 1; }

# Waits for node $1 to be idle (resuming it if it came up down).
wait_idle() {
  local st
  for _ in $(seq 100); do
    st=$(sinfo -h -n "$1" -o %t 2>/dev/null || true)
    case "$st" in
      idle*) return 0 ;;
      down* | drain*) scontrol update nodename="$1" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.1
  done
  log "node $1 is not idle; see its log in $D"
  return 1
}

if [ "$NODES" = 1 ]; then
  slurmd -N "$host" -f "$CONF"
  for _ in $(seq 100); do [ -s "$D/slurmd.pid" ] && break; sleep 0.05; done
  echo "slurmd $(cat "$D/slurmd.pid")" >>"$D/started"
  wait_idle "$host"
  log "one-node cluster up: node $host, config $CONF"
else
  for i in $(seq "$NODES"); do
    # Only the network namespace is entered (`ip netns exec` would also
    # remount /sys, hiding the cgroup file system slurmd needs); the UTS
    # namespace is new, for the node's own host name.
    nsenter --net="/run/netns/taln$i" unshare --uts \
      sh -c "hostname taln$i && exec slurmd -N taln$i -f '$CONF'"
    for _ in $(seq 100); do [ -s "$D/slurmd.taln$i.pid" ] && break; sleep 0.05; done
    echo "slurmd $(cat "$D/slurmd.taln$i.pid")" >>"$D/started"
  done
  for i in $(seq "$NODES"); do wait_idle "taln$i"; done
  log "$NODES-node cluster up: nodes taln[1-$NODES] in network namespaces, config $CONF"
fi
echo "$CONF"
