# shellcheck shell=bash disable=SC2034 # variables used by the scripts sourcing this
# Helpers shared by ci/setup.sh, ci/teardown.sh and ci/smoke.sh.
# Sourced, never executed. Daemons are only ever stopped by PID (PID file or
# `ip netns pids`), never by process name: other developers share this machine.

CI_STATE_DIR=/opt/hpcpar-ci
CI_LOG_DIR=$CI_STATE_DIR/log
CI_ENV_FILE=$CI_STATE_DIR/env
CI_SYSTEMS_JSON=$CI_STATE_DIR/systems.json
CI_LOCK_FILE=/run/hpcpar-ci.lock
CI_ALL_PARTS="slurm sge pbs mpi ssh netns browser"
HEAD_NODE=$(hostname -s)

export DEBIAN_FRONTEND=noninteractive

log() { printf '[%s] %s\n' "${PART:-ci}" "$*"; }
warn() { printf '[%s] WARNING: %s\n' "${PART:-ci}" "$*" >&2; }
die() {
  printf '[%s] ERROR: %s\n' "${PART:-ci}" "$*" >&2
  exit 1
}

# Microseconds since the epoch; EPOCHREALTIME keeps this free of forks.
now_us() { printf '%s' "${EPOCHREALTIME/./}"; }

# Seconds elapsed since a now_us value, formatted like "1.23s".
since() {
  local d=$(($(now_us) - $1))
  printf '%d.%02ds' $((d / 1000000)) $((d % 1000000 / 10000))
}

# wants PART: true when PART is in $WANT (a space separated list).
wants() { [[ " $WANT " == *" $1 "* ]]; }

# Reject typos in WANT early, instead of silently skipping a part.
check_want() {
  local p
  for p in $WANT; do
    [[ " $CI_ALL_PARTS " == *" $p "* ]] || die "unknown part '$p' in WANT (known: $CI_ALL_PARTS)"
  done
}

# poll_until TIMEOUT CMD...: poll CMD every 0.2s until it succeeds (0) or
# TIMEOUT seconds pass (1).
poll_until() {
  local timeout=$1 t0
  shift
  t0=$(now_us)
  until "$@" >/dev/null 2>&1; do
    (($(now_us) - t0 > timeout * 1000000)) && return 1
    sleep 0.2
  done
  return 0
}

# wait_until TIMEOUT DESCRIPTION CMD...: like poll_until, but die on timeout,
# so a part that cannot come up fails loudly instead of hanging.
wait_until() {
  local timeout=$1 desc=$2
  shift 2
  poll_until "$timeout" "$@" || die "timed out after ${timeout}s waiting for: $desc"
}

# pidfile_pid FILE COMM: print the PID in FILE if that process is alive and its
# command name starts with COMM. Guards against stale files whose PID was reused
# (e.g. after the machine's processes were killed between sessions).
pidfile_pid() {
  local file=$1 comm=$2 pid state
  [[ -r $file ]] || return 1
  read -r pid <"$file" || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") == "$comm"* ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $state != Z ]] || return 1
  printf '%s\n' "$pid"
}

pid_gone() { [[ ! -e /proc/$1 ]] || [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]; }

# stop_pid PID [TIMEOUT]: SIGTERM, wait, then SIGKILL that one process.
stop_pid() {
  local pid=$1 timeout=${2:-15}
  kill -TERM "$pid" 2>/dev/null || return 0
  poll_until "$timeout" pid_gone "$pid" && return 0
  warn "PID $pid ignored SIGTERM for ${timeout}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  poll_until 5 pid_gone "$pid" || warn "PID $pid still alive after SIGKILL"
}

# stop_pidfile FILE COMM [TIMEOUT]: stop the daemon named by FILE (if it is
# still that daemon) and remove the file. Safe when nothing runs.
stop_pidfile() {
  local file=$1 comm=$2 timeout=${3:-15} pid
  if pid=$(pidfile_pid "$file" "$comm"); then
    log "stopping $comm (PID $pid from $file)"
    stop_pid "$pid" "$timeout"
  fi
  rm -f "$file"
}

# spawn LOGFILE CMD...: start a self-daemonizing program detached from our
# stdio (so a caller piping our output is not held open) and without our lock fd
# (so the daemon does not keep the setup lock forever).
spawn() {
  local logfile=$1 rc=0
  shift
  "$@" </dev/null >>"$logfile" 2>&1 9>&- || rc=$?
  if ((rc != 0)); then
    tail -n 5 "$logfile" >&2
    die "failed to start (rc $rc): $* (log: $logfile)"
  fi
}

# wait_pidfile PIDFILE COMM LOGFILE: a daemon may fork and exit 0 before it
# fails (sshd: "Cannot bind any address"); its PID file tells it really runs.
wait_pidfile() {
  local pidfile=$1 comm=$2 logfile=$3
  poll_until 20 pidfile_pid "$pidfile" "$comm" && return 0
  tail -n 5 "$logfile" >&2
  die "$comm did not stay up: no live PID in $pidfile after 20s (log: $logfile)"
}

# Serialise setup/teardown: two developers running them at once would race on
# PID files, configs and namespaces.
take_lock() {
  exec 9>"$CI_LOCK_FILE"
  flock -w 600 9 || die "could not take $CI_LOCK_FILE within 600s"
}

require_root() { ((EUID == 0)) || die "must run as root"; }

# write_if_changed DEST MODE < content: replace DEST only when the content
# differs; returns 0 when it changed, 1 when it was already up to date.
write_if_changed() {
  local dest=$1 mode=$2 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [[ -f $dest ]] && cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"
    return 1
  fi
  install -m "$mode" "$tmp" "$dest"
  rm -f "$tmp"
  return 0
}

# rewrite_in_place FILE < content: overwrite FILE's content without replacing
# the inode, because /etc/hosts may be a bind mount (mv/sed -i would fail).
rewrite_in_place() {
  local file=$1 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  cmp -s "$tmp" "$file" || cat "$tmp" >"$file"
  rm -f "$tmp"
}
