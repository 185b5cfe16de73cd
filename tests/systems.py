"""Which real batch systems this machine has, and the one rule for when one is missing:
in CI (CI=true) a missing system fails the test; elsewhere the test is skipped."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

# The environment as the test run started, before fixtures clear HPCPAR_* settings: CI's
# own variables (HPCPAR_SGE_PE_SMP, SGE_ROOT ...) are read from here.
CI_ENV = dict(os.environ)
SYSTEMS_JSON = Path(os.environ.get("HPCPAR_CI_SYSTEMS_JSON", "/opt/hpcpar-ci/systems.json"))
PBS_BIN = os.environ.get("HPCPAR_PBS_BIN", "/opt/pbs-slurm/bin")

# A system counts as present when ci/setup.sh says it is up and its client is on PATH.
_CLIENTS = {"slurm": "sbatch", "slurm-netns": "sbatch", "sge": "qsub", "pbs": f"{PBS_BIN}/qsub",
            "ssh": "ssh", "netns": "ip", "netns-sshd": "ip"}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _declared() -> dict[str, bool]:
    try:
        return dict(json.loads(SYSTEMS_JSON.read_text()).get("systems", {}))
    except (OSError, ValueError):
        return {}


def system_available(name: str) -> tuple[bool, str]:
    if not _declared().get(name):
        return False, f"{name} is not up according to {SYSTEMS_JSON} (run ci/setup.sh)"
    client = _CLIENTS.get(name, name)
    found = os.access(client, os.X_OK) if os.sep in client else shutil.which(client)
    if not found:
        return False, f"{name}: client {client!r} not found"
    return True, ""


def require_system(name: str) -> None:
    """Fail in CI, skip elsewhere, when the real system ``name`` is not available."""
    ok, why = system_available(name)
    if ok:
        return
    if in_ci():
        pytest.fail(f"CI needs the real {name} system: {why}", pytrace=False)
    pytest.skip(why)
