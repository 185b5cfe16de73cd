#!/usr/bin/env bash
# Bring up, idempotently, the real systems the hpcpar test suite uses on this
# machine: SLURM (+ a compute node in a network namespace), SGE, PBS syntax on
# SLURM, SSH, network namespaces; optionally an MPI check of a given python.
#
#   WANT="slurm sge pbs mpi ssh netns browser"  parts to bring up (default: all)
#   INSTALL_USER_SSH_CONFIG=1           also Include our ssh_config in ~/.ssh/config
#   MPI_PYTHON=/path/to/python          for "mpi": pip install mpi4py mpich into it
#
# Safe to run again at any time: each step checks before it acts, and running
# daemons are kept. Writes /opt/hpcpar-ci/env and /opt/hpcpar-ci/systems.json.
set -euo pipefail

CI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=ci/lib/all.sh
. "$CI_DIR/lib/all.sh"

WANT=${WANT:-$CI_ALL_PARTS}

# PBS runs on SLURM, so wanting pbs means wanting slurm too.
normalise_want() {
  check_want
  if wants pbs && ! wants slurm; then WANT="$WANT slurm"; fi
}

wanted_pkgs() {
  wants slurm && slurm_pkgs
  wants pbs && pbs_pkgs
  wants sge && sge_pkgs
  if wants ssh || wants netns; then ssh_pkgs; fi
  wants netns && echo iproute2 util-linux
  wants browser && browser_pkgs
  return 0
}

pkg_installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# One apt-get update and one apt-get install for everything, skipped entirely
# when all packages are already there (a re-run then needs no network).
apt_step() {
  local PART=apt t0 pkgs=() missing=() p need_deb=0
  t0=$(now_us)
  read -r -a pkgs <<<"$(wanted_pkgs | tr '\n' ' ')"
  for p in "${pkgs[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  wants pbs && [[ -z $(pbs_deb || true) ]] && need_deb=1
  if ((${#missing[@]} == 0 && need_deb == 0)); then
    log "all packages present, skipping apt ($(since "$t0"))"
    return 0
  fi
  wants sge && sge_preseed
  apt-get update -q -o DPkg::Lock::Timeout=120 >/dev/null || die "apt-get update failed"
  if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=120 "${missing[@]}" \
      >"$CI_LOG_DIR/apt-install.log" 2>&1 || {
      tail -n 30 "$CI_LOG_DIR/apt-install.log" >&2
      die "apt-get install failed (log: $CI_LOG_DIR/apt-install.log)"
    }
  fi
  ((need_deb)) && pbs_download_deb
  log "done in $(since "$t0")"
}

mpi_step() {
  if [[ -z ${MPI_PYTHON:-} ]]; then
    log "MPI_PYTHON not set: skipped (the test venv does 'pip install mpi4py mpich'; check it with ci/mpi.sh PYTHON)"
    return 0
  fi
  bash "$CI_DIR/mpi.sh" "$MPI_PYTHON"
}

# run_part NAME FUNC: a part's own timing is printed by FUNC; PART labels the log.
run_part() {
  local PART=$1
  "$2"
}

main() {
  local t0
  t0=$(now_us)
  require_root
  normalise_want
  install -d -m 0755 "$CI_STATE_DIR" "$CI_LOG_DIR"
  take_lock
  log "WANT=\"$WANT\" on host $HEAD_NODE"
  apt_step
  # Order matters: ssh keys before the login node's sshd, namespaces before
  # the SLURM node inside one, SLURM before the PBS wrappers that use it.
  if wants ssh; then run_part ssh ssh_up; fi
  if wants netns; then run_part netns netns_up; fi
  if wants slurm; then run_part slurm slurm_up; fi
  if wants pbs; then run_part pbs pbs_up; fi
  if wants sge; then run_part sge sge_up; fi
  if wants mpi; then run_part mpi mpi_step; fi
  if wants browser; then run_part browser browser_up; fi
  write_state
  log "setup done in $(since "$t0"); source $CI_ENV_FILE"
}

main "$@"
