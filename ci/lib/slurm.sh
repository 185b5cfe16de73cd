# shellcheck shell=bash
# SLURM 22.05 from Debian, daemons started by hand (no systemd here, and the
# image's policy-rc.d stops postinst from starting anything).
# Node 1: the head node itself (`hostname -s`, 127.0.0.1), partition debug.
# Node 2 (when netns is wanted): compute1 = slurmd inside netns hp-compute,
# partition netns.

SLURM_CONF=/etc/slurm/slurm.conf
SLURM_STATE=/var/lib/slurm/slurmctld
SLURMCTLD_PID=/run/slurmctld.pid
SLURM_NETNS_NODE=compute1
MUNGE_PID=/run/munge/munged.pid

slurm_pkgs() { echo slurmctld slurmd slurm-client munge; }

# CPUs=16 on a 2-core box needs config_overrides, or the node goes inval/DRAIN.
# The SchedulerParameters bring job latency from 1-3s down to well under 1s.
slurm_conf_text() {
  local with_netns=$1 ctl_addr=127.0.0.1
  # compute1 lives in another namespace: it must reach the controller on the bridge.
  [[ $with_netns == 1 ]] && ctl_addr=$ADDR_HEAD
  cat <<EOF
# Written by hpcpar ci/setup.sh; rewritten on every run.
ClusterName=localcluster
SlurmctldHost=$HEAD_NODE($ctl_addr)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$SLURM_STATE
SlurmdSpoolDir=/var/lib/slurm/slurmd-%n
SlurmctldPidFile=$SLURMCTLD_PID
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=1,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=2
MinJobAge=60
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
Waittime=0
MaxArraySize=10001
NodeName=$HEAD_NODE NodeHostname=$HEAD_NODE NodeAddr=127.0.0.1 CPUs=16 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$HEAD_NODE Default=YES MaxTime=INFINITE State=UP
EOF
  [[ $with_netns == 1 ]] && cat <<EOF
NodeName=$SLURM_NETNS_NODE NodeHostname=$SLURM_NETNS_NODE NodeAddr=$ADDR_COMPUTE CPUs=4 RealMemory=1000 State=UNKNOWN
PartitionName=netns Nodes=$SLURM_NETNS_NODE Default=NO MaxTime=INFINITE State=UP
EOF
  return 0
}

munge_ok() { munge -n | unmunge >/dev/null 2>&1; }

munge_up() {
  pidfile_pid "$MUNGE_PID" munged >/dev/null && return 0
  [[ -s /etc/munge/munge.key ]] || runuser -u munge -- /usr/sbin/mungekey --create
  install -d -o munge -g munge -m 0755 /run/munge
  rm -f "$MUNGE_PID"
  # --force: a killed munged leaves its socket behind, which would block a restart.
  spawn /var/log/munge/munged.out runuser -u munge -- /usr/sbin/munged --force
  wait_pidfile "$MUNGE_PID" munged /var/log/munge/munged.log
  wait_until 15 "munge -n | unmunge" munge_ok
}

# Stop every slurmd (head and netns ones) and slurmctld, by their PID files.
slurm_daemons_down() {
  local f
  for f in /run/slurmd-*.pid; do
    [[ -e $f ]] && stop_pidfile "$f" slurmd
  done
  stop_pidfile "$SLURMCTLD_PID" slurmctld
}

ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

# node_usable NODE: usable = not down, drained or invalid (busy is fine: a
# re-run of setup while jobs are running must not fail).
node_state() { sinfo -h -N -n "$1" -o '%T' 2>/dev/null | head -n 1; }
node_usable() { [[ $(node_state "$1") =~ ^(idle|mixed|allocated|completing)$ ]]; }

# A node drained by an earlier, unclean run stays drained across restarts.
node_resume_if_drained() {
  if [[ $(node_state "$1") == *drain* ]]; then
    log "node $1 is $(node_state "$1"), resuming it"
    scontrol update NodeName="$1" State=RESUME || true
  fi
}

slurmctld_up() {
  pidfile_pid "$SLURMCTLD_PID" slurmctld >/dev/null && return 0
  install -d -m 0755 "$SLURM_STATE" /var/log/slurm
  # -i: ignore unreadable state left by a killed controller instead of refusing to start.
  spawn /var/log/slurm/slurmctld.out /usr/sbin/slurmctld -i
  wait_pidfile "$SLURMCTLD_PID" slurmctld /var/log/slurm/slurmctld.log
}

head_slurmd_up() {
  pidfile_pid "/run/slurmd-$HEAD_NODE.pid" slurmd >/dev/null && return 0
  install -d -m 0755 "/var/lib/slurm/slurmd-$HEAD_NODE"
  spawn "/var/log/slurm/slurmd-$HEAD_NODE.out" /usr/sbin/slurmd -N "$HEAD_NODE"
  wait_pidfile "/run/slurmd-$HEAD_NODE.pid" slurmd "/var/log/slurm/slurmd-$HEAD_NODE.log"
}

# nsenter --net (not `ip netns exec`, which remounts /sys and makes slurmd die
# without /sys/fs/cgroup) plus its own UTS namespace so `hostname` = compute1.
netns_slurmd_up() {
  local node=$SLURM_NETNS_NODE
  pidfile_pid "/run/slurmd-$node.pid" slurmd >/dev/null && return 0
  install -d -m 0755 "/var/lib/slurm/slurmd-$node"
  spawn "/var/log/slurm/slurmd-$node.out" nsenter --net="/run/netns/$NS_COMPUTE" \
    unshare --uts sh -c "hostname $node && exec /usr/sbin/slurmd -N $node"
  wait_pidfile "/run/slurmd-$node.pid" slurmd "/var/log/slurm/slurmd-$node.log"
}

slurm_up() {
  local with_netns=0 t0 node nodes=("$HEAD_NODE")
  t0=$(now_us)
  # Keep compute1 when the namespaces are already up, so that a partial re-run
  # (WANT=slurm) does not restart SLURM and drop a node others may be using.
  if wants netns || netns_status; then
    with_netns=1
    nodes+=("$SLURM_NETNS_NODE")
  fi
  install -d -m 0755 /etc/slurm /var/log/slurm
  if ! slurm_conf_text "$with_netns" | cmp -s - "$SLURM_CONF"; then
    # Nodes/addresses changed: old state would carry the old node table.
    [[ -e $SLURM_CONF ]] &&
      log "slurm.conf changed: restarting SLURM with fresh state (job ids restart at 1)"
    slurm_daemons_down
    rm -rf "$SLURM_STATE"
    slurm_conf_text "$with_netns" | write_if_changed "$SLURM_CONF" 0644 || true
  fi
  munge_up
  slurmctld_up
  wait_until 30 "scontrol ping: slurmctld UP" ctld_up
  head_slurmd_up
  [[ $with_netns == 1 ]] && netns_slurmd_up
  for node in "${nodes[@]}"; do
    wait_until 60 "slurmd for node $node registered" sinfo_has_node "$node"
    node_resume_if_drained "$node"
    wait_until 60 "sinfo: node $node idle" node_usable "$node"
  done
  log "up in $(since "$t0") (nodes: $(sinfo -h -N -o '%N/%P/%T' | tr '\n' ' '))"
}

sinfo_has_node() { [[ -n $(node_state "$1") && $(node_state "$1") != unknown* ]]; }

# Status probes check the PID file first: scontrol/sinfo take seconds to time
# out when slurmctld is down.
ctld_running() { pidfile_pid "$SLURMCTLD_PID" slurmctld >/dev/null; }
slurm_status() { ctld_running && ctld_up && node_usable "$HEAD_NODE"; }
slurm_netns_status() {
  pidfile_pid "/run/slurmd-$SLURM_NETNS_NODE.pid" slurmd >/dev/null &&
    ctld_running && node_usable "$SLURM_NETNS_NODE"
}

slurm_down() {
  slurm_daemons_down
  stop_pidfile "$MUNGE_PID" munged
}
