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
# Where the machine has cgroup v1 and allows cgroup and mount namespaces,
# each node also gets cgroups of its own (freezer, cpuacct, memory:
# tal-taln<i> under each, seen by the node as the root) and Slurm tracks
# and accounts jobs with its cgroup plugins, so that each node's job has
# its own `job_<id>` cgroup as on a real cluster; elsewhere the nodes run
# without cgroups. $D/cgroups says which ("v1", or "none: <why>").
# slurm-down.sh removes the namespaces, links and cgroups as well.
#
# --revive-node NAME: on the multi-node cluster under $TAL_SLURM_DIR that
# this script started, starts node NAME's slurmd again if it is not
# running (after a test killed it, as a node failure), notes its new PID
# for slurm-down.sh, and waits until the node is idle (resuming it if
# slurmctld had marked it down).
set -euo pipefail
NODES=1
REVIVE=
usage="usage: slurm-up.sh [--nodes N | --revive-node NAME]"
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=${2:?$usage}; shift 2 ;;
    --nodes=*) NODES=${1#--nodes=}; shift ;;
    --revive-node) REVIVE=${2:?$usage}; shift 2 ;;
    *) echo "slurm-up: unknown argument $1 ($usage)" >&2; exit 2 ;;
  esac
done
case "$NODES" in '' | *[!0-9]* | 0) echo "slurm-up: --nodes needs a positive number" >&2; exit 2 ;; esac
# One bring-up at a time on this machine (the clusters share munge, and a
# test binary may bring up both at once). The daemons started below do not
# inherit the lock (`9>&-`), or they would hold it for ever.
exec 9>/tmp/tal-slurm-up.lock
flock 9
export TAL_SLURM_LOCKED=1 # for the slurm-down.sh it may call
NET=${TAL_SLURM_NET:-10.77.0}
track="ProctrackType=proctrack/linuxproc
JobAcctGatherType=jobacct_gather/none"
D=${TAL_SLURM_DIR:-/tmp/tal-slurm}
CONF=$D/slurm.conf
log() { echo "slurm-up: $*" >&2; }
# The cgroup v1 controllers a multi-node cluster's nodes get their own
# hierarchy of (process tracking, CPU time, memory).
CG_CTLS="freezer cpuacct memory"

alive() { # pid: running and not a zombie
  local st
  st=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true)
  [ -n "$st" ] && [ "$st" != Z ]
}

# Starts node taln$1's slurmd in its namespaces and notes its PID (in place
# of $2, its previous one, if given). Only the network namespace is
# entered (`ip netns exec` would also remount /sys, hiding the cgroup file
# system slurmd needs); the UTS namespace is new, for the node's own host
# name. With per-node cgroups ($D/cgroups says v1), the slurmd first joins
# the node's own cgroup under each controller (tal-taln<i>), then gets a
# cgroup namespace rooted there and a mount namespace in which each
# controller is mounted again, so that it (and every job step it starts)
# sees that cgroup as the root of the hierarchy: the node's `slurm/uid_*/
# job_*` cgroups stay apart from the other nodes'.
start_node() {
  local i=$1 old=${2:-} pidf="$D/slurmd.taln$1.pid" c
  local inner="hostname taln$i && exec slurmd -N taln$i -f '$CONF'"
  rm -f "$pidf"
  if [ "$(head -1 "$D/cgroups" 2>/dev/null)" = v1 ]; then
    for c in $CG_CTLS; do inner="umount /sys/fs/cgroup/$c && mount -t cgroup -o $c tal-taln$i /sys/fs/cgroup/$c && $inner"; done
    nsenter --net="/run/netns/taln$i" sh -c "
      for c in $CG_CTLS; do echo \$\$ >/sys/fs/cgroup/\$c/tal-taln$i/cgroup.procs || exit 1; done
      exec unshare --uts --cgroup --mount sh -c \"$inner\"" 9>&-
  else
    nsenter --net="/run/netns/taln$i" unshare --uts sh -c "$inner" 9>&-
  fi
  for _ in $(seq 100); do [ -s "$pidf" ] && break; sleep 0.05; done
  [ -s "$pidf" ] || { log "slurmd of taln$i did not start; see $D/slurmd.taln$i.log"; return 1; }
  if [ -n "$old" ]; then
    sed -i "s/^slurmd $old\$/slurmd $(cat "$pidf")/" "$D/started"
  else
    echo "slurmd $(cat "$pidf")" >>"$D/started"
  fi
}

# Waits for node $1 to be idle (resuming it if it came up down).
wait_idle() {
  local st
  for _ in $(seq 100); do
    st=$(SLURM_CONF=$CONF sinfo -h -n "$1" -o %t 2>/dev/null || true)
    case "$st" in
      idle*) return 0 ;;
      down* | drain*) SLURM_CONF=$CONF scontrol update nodename="$1" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.1
  done
  log "node $1 is not idle; see its log in $D"
  return 1
}

# Whether a node's cgroups can be set up here, tried once on a throwaway
# cgroup (tal-probe) the way start_node does it.
probe_cgroups() {
  local c rc=0
  for c in $CG_CTLS; do mkdir -p "/sys/fs/cgroup/$c/tal-probe" 2>/dev/null || rc=1; done
  if [ $rc = 0 ]; then
    sh -c "for c in $CG_CTLS; do echo \$\$ >/sys/fs/cgroup/\$c/tal-probe/cgroup.procs || exit 1; done
      exec unshare --cgroup --mount sh -c 'for c in $CG_CTLS; do umount /sys/fs/cgroup/\$c && mount -t cgroup -o \$c tal-probe /sys/fs/cgroup/\$c || exit 1; done'" \
      >/dev/null 2>&1 || rc=1
  fi
  for c in $CG_CTLS; do rmdir "/sys/fs/cgroup/$c/tal-probe" 2>/dev/null || true; done
  return $rc
}

if [ -n "$REVIVE" ]; then
  i=${REVIVE#taln}
  case "$i" in '' | *[!0-9]*) log "--revive-node: no node $REVIVE (the nodes are taln1, taln2, …)"; exit 2 ;; esac
  if ! [ -f "$D/started" ] || ! [ -e "/run/netns/taln$i" ] || ! grep -q "^NodeName=taln$i " "$CONF"; then
    log "--revive-node: no multi-node cluster with node $REVIVE under $D"
    exit 1
  fi
  old=$(cat "$D/slurmd.taln$i.pid" 2>/dev/null || true)
  if [ -n "$old" ] && alive "$old"; then
    log "slurmd of $REVIVE is running (PID $old)"
  else
    start_node "$i" "$old"
    log "slurmd of $REVIVE started again (PID $(cat "$D/slurmd.taln$i.pid"))"
  fi
  wait_idle "$REVIVE"
  exit 0
fi

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
  runuser -u munge -- munged 9>&-
  for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  echo "munged $(cat /run/munge/munged.pid)" >>"$D/started"
  munge -n | unmunge >/dev/null
fi

# slurm.conf, with this machine's topology as slurmd sees it.
topo=$(slurmd -C | head -1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')
if [ "$NODES" = 1 ]; then
  ctld_addr=127.0.0.1 ctld_port=6817 per_node=
  echo "none: the one-node cluster runs without cgroups" >"$D/cgroups"
  nodes_conf="NodeName=$host NodeAddr=127.0.0.1 ${topo}RealMemory=1024 State=UNKNOWN"
  partition_nodes=$host
else
  ctld_addr=$NET.1 ctld_port=6827 per_node=.%n
  nodes_conf=$(for i in $(seq "$NODES"); do
    echo "NodeName=taln$i NodeAddr=$NET.$((10 + i)) ${topo}RealMemory=1024 State=UNKNOWN"
  done)
  partition_nodes="taln[1-$NODES]"
  # Per-node cgroups, where this machine allows them: cgroup v1 with the
  # controllers mounted at /sys/fs/cgroup/<controller> (Slurm 22.05's
  # cgroup/v1 plugin), and cgroup and mount namespaces. Otherwise the
  # nodes track processes without cgroups (as the one-node cluster does),
  # and $D/cgroups says why.
  why=
  for c in $CG_CTLS; do
    grep -q " /sys/fs/cgroup/$c [^-]* - cgroup " /proc/self/mountinfo ||
      why="no cgroup v1 $c controller mounted at /sys/fs/cgroup/$c (Slurm 22.05 on cgroup v2 needs systemd, which these machines do not run)"
  done
  [ -n "$why" ] || probe_cgroups ||
    why="this machine would not let a process make and join a cgroup, then mount it as its own root in new cgroup and mount namespaces"
  if [ -z "$why" ]; then
    echo v1 >"$D/cgroups"
    for i in $(seq "$NODES"); do
      for c in $CG_CTLS; do
        mkdir -p "/sys/fs/cgroup/$c/tal-taln$i"
        echo "cgroup /sys/fs/cgroup/$c/tal-taln$i" >>"$D/net"
      done
    done
    track="ProctrackType=proctrack/cgroup
JobAcctGatherType=jobacct_gather/cgroup"
    cat >"$D/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOF
  else
    echo "none: $why" >"$D/cgroups"
    log "nodes without cgroups: $why"
  fi
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
$track
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
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

slurmctld -i -c -f "$CONF" 9>&-
for _ in $(seq 100); do [ -s "$D/slurmctld.pid" ] && break; sleep 0.05; done
echo "slurmctld $(cat "$D/slurmctld.pid")" >>"$D/started"
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
scontrol ping | grep -q UP || { log "slurmctld did not come up; see $D/slurmctld.log"; exit 1; }

if [ "$NODES" = 1 ]; then
  slurmd -N "$host" -f "$CONF" 9>&-
  for _ in $(seq 100); do [ -s "$D/slurmd.pid" ] && break; sleep 0.05; done
  echo "slurmd $(cat "$D/slurmd.pid")" >>"$D/started"
  wait_idle "$host"
  log "one-node cluster up: node $host, config $CONF"
else
  for i in $(seq "$NODES"); do start_node "$i"; done
  for i in $(seq "$NODES"); do wait_idle "taln$i"; done
  log "$NODES-node cluster up: nodes taln[1-$NODES] in network namespaces, config $CONF"
fi
echo "$CONF"
