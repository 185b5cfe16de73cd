#!/usr/bin/env bash
# ci/mpi.sh PYTHON: pip-install mpi4py and the MPICH wheel into PYTHON's
# environment (a venv's python, normally) and check that its own mpiexec runs
# a 2-rank mpi4py program. The MPICH wheel brings a hydra mpiexec: no root or
# oversubscription flags needed (unlike Open MPI), and it works inside SLURM
# and SGE jobs. Records PYTHON in /opt/hpcpar-ci/mpi-python for setup's env file.
set -euo pipefail

CI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=ci/lib/common.sh
. "$CI_DIR/lib/common.sh"
PART=mpi

# Every rank takes part in the collective; rank 0 reports (a collective called
# only under `if rank == 0` would hang).
MPI_PROG='
from mpi4py import MPI
c = MPI.COMM_WORLD
total = c.allreduce(c.rank)
names = c.gather(MPI.Get_processor_name())
if c.rank == 0:
    assert c.size == 2 and total == 1, (c.size, total)
    print("mpi ok: size=%d ranks_sum=%d hosts=%s %s" % (c.size, total, sorted(set(names)),
          MPI.Get_library_version().split("\n")[0].strip("\0 ")))
'

mpi_install() {
  local py=$1
  # The mpich wheel has no importable module (only lib/ and bin/): ask its metadata.
  if "$py" -c 'import mpi4py, importlib.metadata as m; m.version("mpich")' 2>/dev/null; then
    log "mpi4py and mpich already installed in $py"
    return 0
  fi
  "$py" -m pip install -q mpi4py mpich || die "pip install mpi4py mpich failed for $py"
}

mpi_check() {
  local py=$1 scripts out
  scripts=$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  [[ -x $scripts/mpiexec ]] || die "no mpiexec in $scripts after installing the mpich wheel"
  out=$(timeout 60 "$scripts/mpiexec" -n 2 "$py" -c "$MPI_PROG" 2>&1) ||
    die "mpiexec -n 2 failed: $out"
  log "$out"
  log "mpiexec: $scripts/mpiexec"
}

main() {
  local py=${1:-} t0
  [[ -n $py ]] || die "usage: ci/mpi.sh /path/to/python"
  py=$(command -v "$py") || die "python '$1' not found"
  # Resolve pyenv shims and the like to the interpreter itself.
  py=$("$py" -c 'import sys; print(sys.executable)')
  t0=$(now_us)
  mpi_install "$py"
  mpi_check "$py"
  # Only root can write the shared state dir; the check itself works for anyone.
  if install -d -m 0755 "$CI_STATE_DIR" 2>/dev/null; then
    printf '%s\n' "$py" >"$CI_STATE_DIR/mpi-python"
  fi
  log "up in $(since "$t0")"
}

main "$@"
