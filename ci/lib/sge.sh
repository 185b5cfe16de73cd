# shellcheck shell=bash
# Son of Grid Engine 8.1.9 from Debian: qmaster + execd on this host, queue
# all.q (16 slots), parallel environments smp and mpi. Configured with
# qconf -A*/-M* from files (no editor), daemons started by hand; Debian's
# init scripts stop by process name, so they are never used.

export SGE_ROOT=/var/lib/gridengine
export SGE_CELL=default
SGE_COMMON=$SGE_ROOT/$SGE_CELL/common
SGE_SPOOLDB=/var/spool/gridengine/spooldb
SGE_QMASTER_PID=/var/spool/gridengine/qmaster/qmaster.pid
SGE_QUEUE=all.q
SGE_UTIL=/usr/lib/gridengine

sge_pkgs() { echo gridengine-master gridengine-exec gridengine-client; }

# Must run before apt-get install: the postinst then runs init_cluster for us.
sge_preseed() {
  local p
  for p in gridengine-common gridengine-master gridengine-exec gridengine-client; do
    printf '%s shared/gridengineconfig boolean true\n' "$p"
    printf '%s shared/gridenginecell string %s\n' "$p" "$SGE_CELL"
    printf '%s shared/gridenginemaster string %s\n' "$p" "$(hostname)"
  done | debconf-set-selections
}

# For an install made without the preseed.
sge_init_cluster() {
  [[ -e $SGE_SPOOLDB/sge ]] && return 0
  log "initialising the SGE cluster (spool $SGE_SPOOLDB)"
  su -s /bin/sh -c "/usr/share/gridengine/scripts/init_cluster $SGE_ROOT $SGE_CELL $SGE_SPOOLDB sgeadmin" sgeadmin
}

# SGE's own view of this host: its name, and the name its IP resolves back to.
sge_my_name() { "$SGE_UTIL/gethostname" -name; }
sge_reverse_name() {
  local ip
  ip=$(getent ahostsv4 "$(hostname)" | awk 'NR == 1 {print $1}')
  "$SGE_UTIL/gethostbyaddr" -name "$ip"
}

# /etc/hosts has "127.0.0.1 localhost" before "127.0.0.1 vm": clients call
# themselves "vm" but qmaster sees "localhost" and refuses every request
# ("access denied (client IP resolved to host name localhost ...)").
# host_aliases maps both to one canonical name (listed first) without editing
# /etc/hosts. Returns 0 when the files changed (qmaster must restart).
sge_fix_aliases() {
  local me rev changed=1
  me=$(sge_my_name)
  rev=$(sge_reverse_name)
  if [[ -n $rev && $rev != "$me" ]]; then
    printf '%s %s\n' "$me" "$rev" | write_if_changed "$SGE_COMMON/host_aliases" 0644 && changed=0
  fi
  printf '%s\n' "$me" | write_if_changed "$SGE_COMMON/act_qmaster" 0644 && changed=0
  return "$changed"
}

# The execd spool directory is named after the resolved name (here "localhost").
sge_execd_pidfile() {
  local f
  for f in /var/spool/gridengine/execd/*/execd.pid; do
    [[ -e $f ]] && pidfile_pid "$f" sge_execd >/dev/null && { printf '%s\n' "$f"; return 0; }
  done
  return 1
}

sge_qmaster_ok() { qconf -sh >/dev/null 2>&1; }

sge_qmaster_up() {
  pidfile_pid "$SGE_QMASTER_PID" sge_qmaster >/dev/null && return 0
  rm -f "$SGE_QMASTER_PID"
  spawn "$CI_LOG_DIR/sge_qmaster.out" /usr/sbin/sge_qmaster
  wait_pidfile "$SGE_QMASTER_PID" sge_qmaster /var/spool/gridengine/qmaster/messages
  wait_until 60 "qconf -sh answers (sge_qmaster up)" sge_qmaster_ok
}

sge_execd_up() {
  sge_execd_pidfile >/dev/null && return 0
  spawn "$CI_LOG_DIR/sge_execd.out" /usr/sbin/sge_execd
  wait_until 30 "sge_execd running" sge_execd_pidfile
}

# conf_set KEY VALUE: rewrite one "key value" line of a qconf listing on stdin.
conf_set() { sed -E "s|^($1)[[:space:]].*|\\1 $2|"; }

# sge_apply SHOW_CMD MODIFY_OPT ADD_OPT FILENAME < desired: add or modify one
# object, only when it differs from what qmaster has (keeps re-runs quiet and
# fast). Returns 0 if it changed something, 1 if all was already in place.
sge_apply() {
  local show=$1 modify=$2 add=$3 name=$4 dir current opt out rc=0
  dir=$(mktemp -d)
  cat >"$dir/$name"
  if current=$(eval "$show" 2>/dev/null); then
    opt=$modify
    diff -q <(printf '%s\n' "$current" | sge_norm) <(sge_norm <"$dir/$name") >/dev/null && opt=
  else
    opt=$add
  fi
  if [[ -n $opt ]]; then
    out=$(qconf "$opt" "$dir/$name" 2>&1) || rc=$?
    log "qconf $opt $name: $out"
    ((rc == 0)) || die "qconf $opt $name failed"
  fi
  rm -rf "$dir"
  [[ -n $opt ]]
}

# Compare configs ignoring column alignment, comment/header and blank lines.
sge_norm() { grep -v -e '^#' -e '^[[:space:]]*$' | tr -s ' \t' ' ' | sed 's/ $//'; }

# min_uid 0: root's jobs are rejected otherwise. login_shells none: a login
# bash reads root's ~/.bashrc, whose `pyenv rehash` serialises concurrent tasks
# on a lock (and a killed one left a stale lock that hung every shell 60s).
sge_global_conf() {
  qconf -sconf global | grep -v '^#' |
    conf_set min_uid 0 | conf_set min_gid 0 |
    conf_set load_report_time 00:00:05 | conf_set login_shells none |
    sge_apply "qconf -sconf global | grep -v '^#'" -Mconf -Aconf global
}

# sge_execd reads the global config when it starts and did not pick up a later
# min_uid change before the first job ran (which then failed and put all.q
# into error state): configure first, restart execd if the config changed.
sge_execd_restart() {
  local f pid
  f=$(sge_execd_pidfile) || return 0
  pid=$(pidfile_pid "$f" sge_execd) || return 0
  log "global config changed, restarting sge_execd (PID $pid)"
  qconf -ke "$(sge_my_name)" >/dev/null 2>&1 || true
  poll_until 20 pid_gone "$pid" || stop_pid "$pid"
  rm -f "$f"
}

# Default schedule_interval is 15s; 1s makes a job start within a second or two.
sge_sched_conf() {
  qconf -ssconf |
    conf_set schedule_interval 0:0:1 | conf_set flush_submit_sec 1 | conf_set flush_finish_sec 1 |
    sge_apply "qconf -ssconf" -Msconf -Msconf sched
}

sge_pe_text() {
  cat <<EOF
pe_name            $1
slots              9999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    $2
control_slaves     TRUE
job_is_first_task  FALSE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
}

# load_thresholds NONE: on 2 busy cores the default np_load_avg=1.75 puts the
# queue in alarm state and nothing gets scheduled.
sge_queue_text() {
  local template
  if ! template=$(qconf -sq "$SGE_QUEUE" 2>/dev/null); then template=$(qconf -sq); fi
  printf '%s\n' "$template" |
    conf_set qname "$SGE_QUEUE" | conf_set hostlist @allhosts | conf_set slots 16 |
    conf_set pe_list 'smp mpi' | conf_set shell /bin/bash | conf_set load_thresholds NONE
}

sge_configure() {
  local me
  me=$(sge_my_name)
  qconf -ss 2>/dev/null | grep -q -x -F "$me" || log "$(qconf -as "$me" 2>&1)"
  sge_global_conf && sge_execd_restart
  sge_sched_conf || true
  printf 'group_name @allhosts\nhostlist %s\n' "$me" |
    sge_apply "qconf -shgrp @allhosts" -Mhgrp -Ahgrp allhosts || true
  # shellcheck disable=SC2016 # SGE keywords, not shell variables
  sge_pe_text smp '$pe_slots' | sge_apply "qconf -sp smp" -Mp -Ap smp || true
  # shellcheck disable=SC2016
  sge_pe_text mpi '$fill_up' | sge_apply "qconf -sp mpi" -Mp -Ap mpi || true
  sge_queue_text | sge_apply "qconf -sq $SGE_QUEUE" -Mq -Aq "$SGE_QUEUE" || true
  # Clear an error state left by a job that failed in an earlier run.
  qmod -c "$SGE_QUEUE" >/dev/null 2>&1 || true
}

# Usable = the queue instance line of `qstat -f` has no state column
# (a/u/E/d... would appear as a 6th field).
sge_queue_ok() {
  qstat -f -q "$SGE_QUEUE" 2>/dev/null | awk -v q="$SGE_QUEUE@$(sge_my_name)" \
    '$1 == q && NF == 5 && $4 != "-NA-" {ok = 1} END {exit !ok}'
}

sge_up() {
  local t0
  t0=$(now_us)
  install -d -m 0755 "$CI_LOG_DIR"
  sge_init_cluster
  if sge_fix_aliases; then
    log "host_aliases/act_qmaster changed, (re)starting sge_qmaster"
    sge_qmaster_stop
  fi
  sge_qmaster_up
  sge_configure
  sge_execd_up
  wait_until 60 "qstat -f shows $SGE_QUEUE usable" sge_queue_ok
  log "up in $(since "$t0") ($(qstat -f -q "$SGE_QUEUE" | awk -v q="$SGE_QUEUE@" 'index($1, q) == 1'))"
}

# PID file first: qconf/qstat take seconds to give up when qmaster is down.
sge_status() {
  pidfile_pid "$SGE_QMASTER_PID" sge_qmaster >/dev/null && sge_qmaster_ok && sge_queue_ok
}

sge_qmaster_stop() {
  local pid
  pid=$(pidfile_pid "$SGE_QMASTER_PID" sge_qmaster) || return 0
  qconf -km >/dev/null 2>&1 || true
  poll_until 30 pid_gone "$pid" || stop_pidfile "$SGE_QMASTER_PID" sge_qmaster
  rm -f "$SGE_QMASTER_PID"
}

# SGE's own shutdown first (-kej also ends running jobs), then the PID files.
sge_down() {
  local f pid
  if pidfile_pid "$SGE_QMASTER_PID" sge_qmaster >/dev/null && sge_qmaster_ok; then
    qconf -kej all >/dev/null 2>&1 || true
  fi
  for f in /var/spool/gridengine/execd/*/execd.pid; do
    [[ -e $f ]] || continue
    if pid=$(pidfile_pid "$f" sge_execd); then
      poll_until 20 pid_gone "$pid" || stop_pidfile "$f" sge_execd
    fi
    rm -f "$f"
  done
  sge_qmaster_stop
}
