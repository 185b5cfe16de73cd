#!/usr/bin/env bash
# Stop everything ci/setup.sh started, idempotently: daemons by their PID files
# (SGE through its own qconf shutdown first), never by process name, since other
# developers' processes share this machine. Then delete the network namespaces
# (after stopping, by PID, whatever still runs inside) and our /etc/hosts lines.
# Packages, keys and configs stay, so the next setup is fast.
#
#   WANT="..."  parts to stop (default: all). Stopping netns also stops the
#               SLURM node and the sshd living inside the namespaces.
set -euo pipefail

CI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=ci/lib/all.sh
. "$CI_DIR/lib/all.sh"

WANT=${WANT:-$CI_ALL_PARTS}

# The slurmd of compute1 lives in hp-compute: stop it by its PID file before
# the namespace goes (slurm_down stops every slurmd-*.pid).
netns_slurmd_down() { stop_pidfile "/run/slurmd-$SLURM_NETNS_NODE.pid" slurmd; }

# PBS has no daemon of its own: only its spank plugin config is removed, so
# SLURM jobs stop getting PBS_* variables. The unpacked wrappers stay.
# Processes in the namespaces first (by PID file), then the namespaces.
netns_all_down() {
  netns_slurmd_down
  login_sshd_down
  netns_down
}

pbs_down() { rm -f "$PBS_SPANK_CONF"; }

mpi_down() { rm -f "$CI_MPI_MARKER"; }

part_down() {
  local PART=$1 t0
  t0=$(now_us)
  "$2"
  log "down in $(since "$t0")"
}

main() {
  local t0
  t0=$(now_us)
  require_root
  check_want
  install -d -m 0755 "$CI_STATE_DIR"
  take_lock
  if wants sge; then part_down sge sge_down; fi
  if wants pbs; then part_down pbs pbs_down; fi
  if wants slurm; then part_down slurm slurm_down; fi
  if wants netns; then part_down netns netns_all_down; fi
  if wants ssh; then part_down ssh ssh_down; fi
  if wants mpi; then part_down mpi mpi_down; fi
  # What remains up (normally nothing) is what tests will see.
  write_state
  if ((${#UP_PARTS[@]} == 0)); then rm -f "$CI_ENV_FILE"; fi
  log "teardown done in $(since "$t0")"
}

main "$@"
