#!/usr/bin/env bash
# Create the benchmark venv: hpcpar (editable, from this repo), ipyparallel, dask[distributed], numpy.
# Usage: bash benchmarks/setup.sh            (venv at /opt/hpcpar-bench-venv)
#        BENCH_VENV=/some/dir bash benchmarks/setup.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BENCH_VENV:-/opt/hpcpar-bench-venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet numpy ipyparallel "dask[distributed]" psutil
"$VENV/bin/python" -m pip install --quiet -e "$REPO"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("hpcpar", "ipyparallel", "dask", "distributed", "numpy", "pyzmq"):
    try:
        print(f"{name:12s} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name:12s} MISSING")
PY
echo "benchmark venv ready: $VENV/bin/python $REPO/benchmarks/run.py"
