"""Several engines per batch job (engines_per_job) on the real SLURM and Grid Engine that
ci/setup.sh brings up: 4 engines in 2 jobs (array tasks), each engine in its own slot, all
stopped by `hpcpar stop`. In CI (CI=true) a missing system fails these tests."""

from __future__ import annotations

from collections import Counter

import pytest
from systems import CI_ENV, require_system
from test_cluster_batch import env_for, make_profile, run, wait_gone

import hpcpar
from hpcpar.launchers.ledger import read_jobs


@pytest.mark.timeout(180)
@pytest.mark.parametrize("system", ["slurm", "sge"])
def test_four_engines_in_two_array_tasks(system: str) -> None:
    require_system(system)
    extra = f'\n[sge]\npe = "{CI_ENV.get("HPCPAR_SGE_PE_SMP", "smp")}"\n' if system == "sge" else ""
    pd = make_profile(f"perjob-{system}", extra)
    env = env_for(system)
    args = ["--profile", pd.name]
    start = run(["start", *args, "--engines", system, "-n", "4", "--set", "batch.engines_per_job=2",
                 "--daemonize", "--wait", "--timeout", "120"], env, timeout=150)
    jobs = [r.job_id for r in read_jobs(pd)]
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        assert "array of 2 tasks, 2 engines each" in start.stdout and "engines registered 4/4" in start.stdout
        assert len(jobs) == 1  # one array
        with hpcpar.Client(profile=pd.name, timeout=30) as rc:
            rc.wait_for_engines(4, timeout=30, interactive=False)
            # A function defined here travels by value (the engines cannot import this module).
            def job_of_each_engine() -> tuple[str, str]:
                import os

                env = os.environ
                job = env.get("SLURM_JOB_ID") or f"{env.get('JOB_ID')}.{env.get('SGE_TASK_ID')}"
                return job, env.get("HPCPAR_ENGINE_SLOT", "")

            placed = rc[:].apply_sync(job_of_each_engine)
            assert sum(rc.load_balanced_view().map_sync(lambda x: x + 1, range(10))) == 55
        per_job = Counter(job for job, _ in placed)
        assert sorted(per_job.values()) == [2, 2], placed  # two array tasks, two engines each
        assert sorted(slot for _, slot in placed) == ["0", "0", "1", "1"]
    finally:
        stop = run(["stop", *args], env, timeout=120)
    assert stop.returncode == 0, stop.stderr
    wait_gone(system, jobs, env)
