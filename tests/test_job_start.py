"""The launchers read when a job started from the scheduler itself (SLURM squeue %S, Grid
Engine qstat -xml JAT_start_time, SLURM's PBS qstat wrapper), to the second and whatever
this process's time zone: checked against a second command of the same real scheduler.
In CI a missing system fails these tests."""

from __future__ import annotations

import calendar
import getpass
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from systems import CI_ENV, PBS_BIN, require_system

from hpcpar.launchers.batch import BatchLauncher
from hpcpar.launchers.pbs import TorqueLauncher
from hpcpar.launchers.sge import SGELauncher
from hpcpar.launchers.slurm import SlurmLauncher

# This process's zone for the tests: 5 h 30 ahead of UTC, no tz database needed. Reading
# the schedulers' local times in it (or in UTC) would be off by hours.
FAR_ZONE = "XXX-5:30"


def utc_env() -> dict[str, str]:
    env = {**os.environ, "TZ": "UTC0", "LC_ALL": "C"}
    for name in ("SGE_ROOT", "SGE_CELL"):
        if name in CI_ENV:
            env[name] = CI_ENV[name]
    return env


def utc(text: str, fmt: str) -> float:
    return float(calendar.timegm(time.strptime(text, fmt)))


def scheduler_start(system: str, job_id: str) -> float | None:
    """The job's start by another command than the launcher's poll (None while it has not)."""
    if system == "sge":  # the plain qstat listing's "submit/start at" column of a running job
        out = subprocess.run(["qstat", "-u", getpass.getuser()], capture_output=True, text=True,
                             env=utc_env(), timeout=30).stdout
        for line in out.splitlines():
            f = line.split()
            if f and f[0] == job_id and ("r" in f[4] or "t" in f[4]):  # running, or being started
                return utc(f"{f[5]} {f[6]}", "%m/%d/%Y %H:%M:%S")
        return None
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                         env=utc_env(), timeout=30).stdout
    state = re.search(r"JobState=(\S+)", out)
    start = re.search(r"StartTime=(\S+)", out)
    if not (state and start and state.group(1) == "RUNNING"):
        return None
    return utc(start.group(1), "%Y-%m-%dT%H:%M:%S")


def submit_sleeper(system: str, tmp: Path) -> str:
    script = tmp / "sleeper.sh"
    script.write_text("#!/bin/bash\nsleep 120\n")
    script.chmod(0o755)
    if system == "sge":
        argv = ["qsub", "-terse", "-j", "y", "-o", str(tmp / "out"), "-cwd", str(script)]
    else:
        argv = ["sbatch", "--parsable", "-o", str(tmp / "out"), "-p", CI_ENV.get("HPCPAR_SLURM_PARTITION", "debug"),
                str(script)]
    done = subprocess.run(argv, capture_output=True, text=True, env=utc_env(), cwd=tmp, timeout=60, check=True)
    return done.stdout.strip().splitlines()[-1].split(";")[0].split(".")[0]


def cancel(system: str, job_id: str) -> None:
    subprocess.run(["qdel" if system == "sge" else "scancel", job_id], capture_output=True, env=utc_env(),
                   timeout=60)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("system", ["slurm", "sge", "pbs"])
def test_the_poll_reports_the_schedulers_start_time_in_any_time_zone(system, tmp_path, monkeypatch) -> None:
    require_system(system)
    scheduler = "slurm" if system == "pbs" else system  # SLURM's PBS wrappers run SLURM jobs
    launcher: BatchLauncher
    if system == "pbs":
        monkeypatch.setenv("PATH", f"{PBS_BIN}{os.pathsep}{os.environ['PATH']}")
        launcher = TorqueLauncher(role="engines")  # qstat -f text, as the wrappers print it
    else:
        launcher = SlurmLauncher(role="engines") if system == "slurm" else SGELauncher(role="engines")
    for name in ("SGE_ROOT", "SGE_CELL"):
        if name in CI_ENV:
            monkeypatch.setenv(name, CI_ENV[name])
    monkeypatch.setenv("TZ", FAR_ZONE)
    time.tzset()
    job_id = submit_sleeper(scheduler, tmp_path)
    try:
        deadline = time.monotonic() + 90
        while (reference := scheduler_start(scheduler, job_id)) is None:
            assert time.monotonic() < deadline, f"{scheduler} job {job_id} did not start within 90 s"
            time.sleep(0.5)
        state = launcher.query([job_id])[job_id]
        assert state.state == "running"
        assert state.started == reference, (state, time.strftime("%FT%T", time.gmtime(reference)))
        assert abs(state.started - time.time()) < 120  # and it is now-ish in absolute terms, not hours off
    finally:
        cancel(scheduler, job_id)
        monkeypatch.delenv("TZ")
        time.tzset()
