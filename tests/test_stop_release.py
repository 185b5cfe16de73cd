"""`hpcpar stop` returns only once the batch system has let go of every job (SGE keeps a
deleted job as `dr` for a while, SLURM as COMPLETING): right after it returns, the queue
shows none of the cluster's jobs. Real SLURM, Grid Engine and PBS (SLURM's qsub wrappers);
in CI a missing one fails."""

from __future__ import annotations

import pytest
from systems import require_system
from test_cluster_batch import env_for, make_profile, queued, run

from hpcpar.launchers.ledger import read_jobs
from hpcpar.pool.policy import job_key


@pytest.mark.timeout(200)
@pytest.mark.parametrize("system", ["slurm", "sge", "pbs"])
def test_stop_returns_when_the_queue_is_empty(system: str) -> None:
    require_system(system)
    pd = make_profile(f"release-{system}")
    env = env_for(system)
    args = ["--profile", pd.name]
    start = run(["start", *args, "--engines", system, "-n", "2", "--set", 'batch.mode="jobs"',
                 "--daemonize", "--wait", "--timeout", "120"], env, timeout=150)
    jobs = [r.job_id for r in read_jobs(pd)]
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        assert len(jobs) == 2
    finally:
        stop = run(["stop", *args, "--wait-timeout", "90"], env, timeout=150)
    assert stop.returncode == 0, stop.stderr
    assert "still held" not in stop.stderr
    # No waiting here: stop already did. PBS ids (123.server) are SLURM's 123 underneath.
    assert queued(system, [job_key(j) for j in jobs] if system == "pbs" else jobs, env) == []


@pytest.mark.timeout(200)
def test_plain_batch_start_returns_once_the_engines_are_up() -> None:
    """As the docs say: no --daemonize needed; the cluster keeps running after start returns."""
    require_system("slurm")
    pd = make_profile("plain-start")
    env = env_for("slurm")
    args = ["--profile", pd.name]
    start = run(["start", *args, "--engines", "slurm", "-n", "2", "--timeout", "120"], env, timeout=150)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        assert "cluster ready" in start.stdout and f"hpcpar stop --profile {pd.name}" in start.stdout
        assert "press Ctrl-C" not in start.stdout
        status = run(["status", *args, "--json"], env, timeout=60)
        assert status.returncode == 0, status.stderr
        assert len(__import__("json").loads(status.stdout)["engines"]) == 2
    finally:
        stop = run(["stop", *args], env, timeout=150)
    assert stop.returncode == 0, stop.stderr
