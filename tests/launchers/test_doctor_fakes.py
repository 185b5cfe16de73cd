"""`hpcpar doctor --engines lsf` against the LSF test double (tests/fakes): the version
from `bsub -V`, the test job submitted through the LSF launcher and its template."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.timeout(120)
def test_doctor_with_lsf(fake_path) -> None:
    done = subprocess.run([sys.executable, "-m", "hpcpar", "doctor", "--engines", "lsf", "--ip", "*", "--no-mpi",
                           "--timeout", "60", "--json"], capture_output=True, text=True, timeout=100,
                          env=dict(os.environ))
    assert done.returncode == 0, done.stdout + done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert "IBM Spectrum LSF" in checks["scheduler-commands"]["details"]["version"]
    assert checks["test-job"]["status"] == "ok" and checks["compute-hpcpar"]["status"] == "ok"
    assert checks["controller-reach"]["status"] == "ok"
    jobs = sorted(p.name for p in (fake_path / "lsf").iterdir() if p.is_dir())
    assert jobs == [checks["test-job"]["details"]["job_id"]], jobs  # the version query submitted nothing: one job, the test job
