"""`hpcpar restart --engines` from another shell recovers an MPI job hung in a collective
on a subset: `hpcpar status` shows the hung ranks, the restarted set has the same engine
ids and communicator size, and collectives work again."""

from __future__ import annotations

import os
import subprocess
import time
import warnings

import pytest
from cluster_helpers import hpcpar_cmd, stop_profile
from test_mpi import require_mpi

import hpcpar
from hpcpar.error import CompositeError
from hpcpar.mpi import MPISubsetWarning


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(hpcpar_cmd(*args), capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(300)
def test_restart_engines_recovers_a_hung_mpi_job() -> None:
    require_mpi()
    profile = f"restart-{os.getpid()}"
    start = cli("start", "--profile", profile, "--engines", "mpi", "-n", "4", "--daemonize", "--wait",
                "--timeout", "120")
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        with hpcpar.Client(profile=profile, timeout=30) as rc:
            rc.wait_for_engines(4, timeout=60, interactive=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MPISubsetWarning)
                stuck = rc[:2].execute("comm.Barrier()", block=False)
            deadline = time.monotonic() + 60
            line = ""
            while "rank 0-1 in comm.Barrier" not in line and time.monotonic() < deadline:
                out = cli("status", "--profile", profile, timeout=60).stdout
                line = next((x for x in out.splitlines() if x.startswith("NOW: ")), "")
                time.sleep(0.5)
            assert "rank 0-1 in comm.Barrier" in line and "rank 2-3 idle" in line, line
            restart = cli("restart", "--profile", profile, "--engines", "--timeout", "120")
            assert restart.returncode == 0, restart.stdout + restart.stderr
            assert "-> [0, 1, 2, 3]" in restart.stdout, restart.stdout
            with pytest.raises(CompositeError, match=r"EngineError: engine 0 \(MPI rank 0 of 4\)"):
                stuck.get(timeout=30)  # the hung task reports its engine's end, never silent
            rc.wait_for_engines(4, timeout=60, interactive=False)
            assert sorted(rc.ids) == [0, 1, 2, 3]
            assert rc[:].apply_sync(lambda: __import__("mpi4py.MPI").MPI.COMM_WORLD.allreduce(1)) == [4] * 4
    finally:
        stop_profile(profile, check=False)
