#!/usr/bin/env bash
# Local demo on a fresh Debian 12 machine (as root): install hpcpar into a
# virtualenv, start a 4-engine cluster, run the tutorial, stop the cluster.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${HPCPAR_VENV:-/opt/hpcpar-venv}
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip >/dev/null
fi
[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e "$ROOT"
export PATH=$VENV/bin:$PATH
hpcpar start -n 4 --daemonize --wait
trap 'hpcpar stop' EXIT
python "$ROOT/examples/tutorial.py"
