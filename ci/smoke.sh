#!/usr/bin/env bash
# Quick end-to-end checks that each part brought up by ci/setup.sh really
# works: real jobs through SLURM, SGE and the PBS wrappers, real ssh logins.
# Prints "N passed, M failed" and exits non-zero if any check failed.
#
#   WANT="..."  parts to check (default: all); MPI is checked only when
#               ci/mpi.sh (or setup with MPI_PYTHON) recorded a python.
set -euo pipefail

CI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=ci/lib/all.sh
. "$CI_DIR/lib/all.sh"

WANT=${WANT:-$CI_ALL_PARTS}
JOB_TIMEOUT=${JOB_TIMEOUT:-90}
PASSED=0
FAILED=0
FAILED_NAMES=()
WORK=$(mktemp -d /tmp/hpcpar-smoke.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# check NAME FUNC: run one check in a subshell (so `set -e` and `die` inside it
# only fail that check), with its output indented and its time printed.
# Not `(...) || rc=$?`: bash ignores set -e inside a subshell used that way.
check() {
  local name=$1 t0 rc
  shift
  t0=$(now_us)
  set +e
  (
    set -e
    "$@"
  ) >"$WORK/$name.log" 2>&1
  rc=$?
  set -e
  if ((rc == 0)); then
    PASSED=$((PASSED + 1))
    printf 'PASS %-28s %s\n' "$name" "$(since "$t0")"
  else
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$name")
    printf 'FAIL %-28s %s (rc %d)\n' "$name" "$(since "$t0")" "$rc"
  fi
  sed 's/^/     | /' "$WORK/$name.log"
}

# expect_file FILE PATTERN: the job wrote FILE and it matches PATTERN (ERE).
expect_file() {
  [[ -s $1 ]] || die "missing output file $1"
  grep -E -q "$2" "$1" || die "$1 does not match /$2/: $(cat "$1")"
  echo "$(basename "$1"): $(tr '\n' ' ' <"$1")"
}

# --- SLURM ---------------------------------------------------------------

check_slurm_array() {
  local id
  # shellcheck disable=SC2016 # expanded by the job, not here
  # --wait returns when every task has finished, with the job's exit code.
  id=$(timeout "$JOB_TIMEOUT" sbatch --parsable --wait --array=1-2 -J smoke-arr \
    -o "$WORK/slurm-arr-%A_%a.out" \
    --wrap 'echo "task=$SLURM_ARRAY_TASK_ID host=$(hostname)"')
  echo "array job $id"
  expect_file "$WORK/slurm-arr-${id}_1.out" "^task=1 host=$HEAD_NODE$"
  expect_file "$WORK/slurm-arr-${id}_2.out" "^task=2 host=$HEAD_NODE$"
}

# One-shot TCP listener on the bridge address: proves the job inside hp-compute
# reaches the head node, and records the address it came from.
start_listener() {
  /usr/bin/python3 - "$ADDR_HEAD" "$WORK/listener" <<'EOF' &
import socket, sys
s = socket.socket()
s.settimeout(120)
s.bind((sys.argv[1], 0))
s.listen(1)
open(sys.argv[2] + ".port", "w").write(str(s.getsockname()[1]))
c, (addr, _) = s.accept()
c.settimeout(30)
data = c.recv(200).decode().strip()
open(sys.argv[2] + ".seen", "w").write("from=%s %s\n" % (addr, data))
EOF
  # This runs in check's subshell: stop our listener by its PID when it ends.
  # shellcheck disable=SC2064 # the PID must be expanded now
  trap "kill $! 2>/dev/null || true" EXIT
  wait_until 10 "listener port" test -s "$WORK/listener.port"
}

check_slurm_netns() {
  local port id
  start_listener
  port=$(<"$WORK/listener.port")
  # bash, not sbatch --wrap's /bin/sh (dash): /dev/tcp is a bash feature.
  cat >"$WORK/netns.sh" <<EOF
#!/bin/bash
echo "host=\$(hostname) addrs=\$(ip -4 -o addr show scope global | awk '{print \$4}')"
exec 3<>/dev/tcp/$ADDR_HEAD/$port
echo "hello from \$(hostname)" >&3
EOF
  id=$(timeout "$JOB_TIMEOUT" sbatch --parsable --wait -p netns -J smoke-netns \
    -o "$WORK/slurm-netns.out" "$WORK/netns.sh")
  echo "job $id on partition netns"
  expect_file "$WORK/slurm-netns.out" "^host=$SLURM_NETNS_NODE addrs=$ADDR_COMPUTE/26$"
  wait_until 10 "listener saw the job" test -s "$WORK/listener.seen"
  expect_file "$WORK/listener.seen" "^from=$ADDR_COMPUTE hello from $SLURM_NETNS_NODE$"
}

# --- SGE -----------------------------------------------------------------

# sge_wait ID: finished jobs vanish from qstat at once.
sge_gone() { ! qstat -j "$1" >/dev/null 2>&1; }
sge_wait() { wait_until "$JOB_TIMEOUT" "SGE job $1 to finish" sge_gone "$1"; }

check_sge_array() {
  local out id
  # shellcheck disable=SC2016 # job scripts: expanded when the job runs
  printf '#!/bin/bash\necho "task=$SGE_TASK_ID host=$(hostname)"\n' >"$WORK/arr.sh"
  out=$(qsub -terse -N smokearr -t 1-2 -j y -o "$WORK/sge-arr.\$TASK_ID.out" "$WORK/arr.sh")
  id=${out%%.*} # -terse prints "7.1-2:1" for an array
  echo "qsub -terse: $out -> job $id"
  sge_wait "$id"
  expect_file "$WORK/sge-arr.1.out" '^task=1 host='
  expect_file "$WORK/sge-arr.2.out" '^task=2 host='
}

check_sge_pe() {
  local id
  # shellcheck disable=SC2016 # job scripts: expanded when the job runs
  printf '#!/bin/bash\necho "nslots=$NSLOTS shell=$0"\n' >"$WORK/pe.sh"
  id=$(qsub -terse -N smokepe -pe smp 2 -j y -o "$WORK/sge-pe.out" "$WORK/pe.sh")
  echo "job $id"
  sge_wait "$id"
  # $0 without a leading "-" shows login_shells none took effect.
  expect_file "$WORK/sge-pe.out" '^nslots=2 shell=[^-]'
}

# --- PBS (wrappers on SLURM) -------------------------------------------------

slurm_job_gone() { [[ -z $(squeue -h -j "$1" -o %i 2>/dev/null) ]]; }

check_pbs() {
  local id
  cat >"$WORK/pbs.sh" <<'EOF'
#!/bin/bash
#PBS -N smokepbs
#PBS -l nodes=1:ppn=1
#PBS -l walltime=00:05:00
echo "name=$PBS_JOBNAME jobid=$PBS_JOBID ntasks=$SLURM_NTASKS"
EOF
  id=$(cd "$WORK" && "$PBS_BIN/qsub" -o "$WORK/pbs.out" "$WORK/pbs.sh")
  [[ $id =~ ^[0-9]+$ ]] || die "qsub printed '$id', expected a job id"
  echo "job $id: $(scontrol show job "$id" | grep -o -E '(JobName|TimeLimit|NumTasks)=[^ ]+' | tr '\n' ' ')"
  wait_until "$JOB_TIMEOUT" "PBS job $id to finish" slurm_job_gone "$id"
  expect_file "$WORK/pbs.out" "^name=smokepbs jobid=$id ntasks=1$"
}

# --- SSH -----------------------------------------------------------------

check_ssh() {
  local out
  out=$(ssh -F "$SSH_CONFIG" testhost 'echo "user=$(id -un) conn=${SSH_CONNECTION% *}"' </dev/null)
  echo "testhost: $out"
  [[ $out == "user=root conn=127.0.0.1 "*" 127.0.0.1" ]] || die "unexpected: $out"
  out=$(ssh -F "$SSH_CONFIG" testhost2 'echo "${SSH_CONNECTION##* }"' </dev/null)
  echo "testhost2 port: $out"
  [[ $out == "$SSH_PORT2" ]] || die "testhost2 did not land on port $SSH_PORT2"
}

# The laptop reaches the login node's sshd, but not the head node directly.
check_netns_ssh() {
  local out
  # shellcheck disable=SC2016 # expanded by the remote shell
  out=$(ip netns exec "$NS_LAPTOP" ssh -F "$SSH_CONFIG" "$ADDR_LOGIN_EXT" 'echo "$SSH_CONNECTION"' </dev/null)
  echo "laptop -> login: $out"
  [[ $out == "$ADDR_LAPTOP "*" $ADDR_LOGIN_EXT 22" ]] || die "unexpected: $out"
  if ip netns exec "$NS_LAPTOP" timeout 3 bash -c "exec 3<>/dev/tcp/$ADDR_HEAD/$SSH_PORT" 2>/dev/null; then
    die "laptop namespace reached $ADDR_HEAD directly: isolation broken"
  fi
  echo "laptop -> head $ADDR_HEAD: unreachable, as intended"
}

# --- MPI -----------------------------------------------------------------

check_mpi() {
  local py
  py=$(mpi_python) || die "no python recorded in $CI_MPI_MARKER"
  bash "$CI_DIR/mpi.sh" "$py"
}

# The MPICH wheel's hydra mpiexec inside a 2-task SLURM allocation.
check_mpi_slurm() {
  local py mpiexec id
  py=$(mpi_python) || die "no python recorded in $CI_MPI_MARKER"
  mpiexec=$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/mpiexec
  cat >"$WORK/mpi.sh" <<EOF
#!/bin/bash
$mpiexec -n 2 $py -c '
from mpi4py import MPI
ranks = MPI.COMM_WORLD.gather(MPI.COMM_WORLD.rank)  # every rank calls it
if ranks is not None:
    print("ranks", ranks)'
EOF
  id=$(timeout "$JOB_TIMEOUT" sbatch --parsable --wait -n 2 -J smoke-mpi -o "$WORK/mpi.out" "$WORK/mpi.sh")
  echo "job $id"
  expect_file "$WORK/mpi.out" '^ranks \[0, 1\]$'
}

main() {
  local t0
  t0=$(now_us)
  check_want
  if wants slurm; then check slurm-array check_slurm_array; fi
  if wants slurm && wants netns; then check slurm-netns-partition check_slurm_netns; fi
  if wants sge; then
    check sge-array check_sge_array
    check sge-pe-smp check_sge_pe
  fi
  if wants pbs; then check pbs-qsub check_pbs; fi
  if wants ssh; then check ssh-testhost check_ssh; fi
  if wants netns; then check netns-laptop-ssh check_netns_ssh; fi
  if wants mpi && mpi_python >/dev/null; then
    check mpi check_mpi
    if wants slurm; then check mpi-in-slurm check_mpi_slurm; fi
  fi
  echo "smoke took $(since "$t0")${FAILED_NAMES[*]:+; failed: ${FAILED_NAMES[*]}}"
  echo "$PASSED passed, $FAILED failed"
  ((FAILED == 0))
}

main "$@"
