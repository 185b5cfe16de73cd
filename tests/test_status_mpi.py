"""`hpcpar status` (text and --json) on a local `--engines mpi` cluster: the mpiexec job is
listed by its starter's pid (it used to crash with a TypeError)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from cluster_helpers import hpcpar_cmd, stop_profile
from test_mpi import require_mpi


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(hpcpar_cmd(*args), capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(180)
def test_status_of_a_local_mpi_cluster() -> None:
    require_mpi()
    profile = f"status-mpi-{os.getpid()}"
    start = cli("start", "--profile", profile, "--engines", "mpi", "-n", "2", "--daemonize", "--wait",
                "--timeout", "90")
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        text = cli("status", "--profile", profile, timeout=60)
        assert text.returncode == 0, text.stderr
        assert "ENGINES: 2" in text.stdout and "Traceback" not in text.stderr
        doc = cli("status", "--profile", profile, "--json", timeout=60)
        assert doc.returncode == 0, doc.stderr
        st = json.loads(doc.stdout)
        [job] = [j for j in st["jobs"] if j["role"] == "engines"]
        assert job["system"] == "mpi" and job["state"] == "running" and job["id"].isdigit()
        assert sorted(e["mpi_rank"] for e in st["engines"]) == [0, 1]
    finally:
        stop_profile(profile, check=False)
