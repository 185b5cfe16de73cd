"""Elastic pools on the real SLURM and Grid Engine of ci/setup.sh: scale up and down in
whole jobs, adapt grows under a backlog and shrinks when idle, a job that exits at once is
resubmitted with back-off and then reported with its output. (The 6-minute walltime test
is tests/test_pool_walltime.py.) In CI a missing system fails these tests."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from systems import CI_ENV, require_system
from test_cluster_batch import env_for, make_profile, queued, run, wait_gone
from test_job_start import scheduler_start

import hpcpar
from hpcpar.config import ConfigError
from hpcpar.error import PoolStopped
from hpcpar.launchers.ledger import read_jobs
from hpcpar.paths import ProfileDir
from hpcpar.pool.state import read_pool

POOL = "\n[pool]\ninterval = 0.5\nidle_timeout = 2.0\nwait_count = 2\nbackoff = 1.0\nmax_failures = 2\n"


def pool_profile(name: str, system: str, prologue: tuple[str, ...] = ()) -> ProfileDir:
    sge = f'\n[sge]\npe = "{CI_ENV.get("HPCPAR_SGE_PE_SMP", "smp")}"\n' if system == "sge" else ""
    # Grid Engine jobs do not inherit this environment: the engines must import the hpcpar under test.
    lines = [f"export PYTHONPATH={os.environ['PYTHONPATH']}"] if os.environ.get("PYTHONPATH") else []
    lines += prologue
    return make_profile(f"{name}-{system}", POOL + sge + f"\n[batch.engines]\nprologue = {json.dumps(lines)}\n")


def status(pd: ProfileDir, env: dict[str, str]) -> dict:
    out = run(["status", "--profile", pd.name, "--json"], env, timeout=60)
    return json.loads(out.stdout)


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def our_jobs(system: str, pd: ProfileDir, env: dict[str, str]) -> list[str]:
    return queued(system, [r.job_id for r in read_jobs(pd)], env)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("system", ["slurm", "sge"])
def test_scale_up_then_down_changes_the_queue(system: str) -> None:
    require_system(system)
    pd = pool_profile("scale", system)
    env = env_for(system)
    args = ["--profile", pd.name]
    start = run(["start", *args, "--engines", system, "--min", "1", "--max", "4", "-n", "1", "--timeout", "120"],
                env, timeout=180)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        assert "cluster ready" in start.stdout
        # The pool dates the job's start (and so its replacement) from the scheduler's own word.
        first = wait_until(lambda: [b for b in read_pool(pd).blocks if b.start_from], 30, "a dated job start")[0]
        started = wait_until(lambda: scheduler_start(system, first.job_id), 30, "the scheduler's start time")
        assert (first.start_from, first.started) == ("scheduler", started)
        up = run(["scale", "4", *args, "--wait", "--timeout", "120"], env, timeout=180)
        assert up.returncode == 0, up.stdout + up.stderr
        assert len(our_jobs(system, pd, env)) == 4  # four jobs of one engine each
        down = run(["scale", "1", *args, "--wait", "--timeout", "120"], env, timeout=180)
        assert down.returncode == 0, down.stdout + down.stderr
        wait_until(lambda: len(our_jobs(system, pd, env)) == 1, 60, "three jobs to leave the queue")
        st = status(pd, env)
        assert st["pool"]["target"] == 1 and not st["pool"]["adaptive"] and len(st["engines"]) == 1
        actions = [d["action"] for d in st["pool"]["decisions"]]
        assert actions.count("cancel") >= 3 or "cancel" in actions
        text = run(["status", *args], env, timeout=60).stdout
        assert "POOL: fixed size, target 1 engines, 1 registered" in text
    finally:
        stop = run(["stop", *args], env, timeout=150)
    assert stop.returncode == 0, stop.stderr
    assert read_pool(pd) is None and our_jobs(system, pd, env) == []


@pytest.mark.timeout(300)
@pytest.mark.parametrize("system", ["slurm", "sge"])
def test_adapt_grows_under_a_backlog_and_shrinks_when_idle(system: str) -> None:
    require_system(system)
    pd = pool_profile("adapt", system)
    env = env_for(system)
    args = ["--profile", pd.name]
    start = run(["start", *args, "--engines", system, "--min", "1", "--max", "3", "-n", "1", "--timeout", "120"],
                env, timeout=180)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        with hpcpar.Client(profile=pd.name, timeout=30) as rc:
            lview = rc.load_balanced_view()
            ar = lview.map_async(lambda x: __import__("time").sleep(1.5) or x, range(40))
            grown = wait_until(lambda: len(rc.ids) >= 3, 120, "the pool to grow to 3 engines")
            assert grown
            assert ar.get(timeout=120) == list(range(40))
            assert len(rc.ids) <= 3  # never above max
            wait_until(lambda: len(rc.ids) == 1, 120, "the pool to shrink back to its minimum")
        decisions = " | ".join(d["reason"] for d in status(pd, env)["pool"]["decisions"])
        assert "wait and no engine is idle: grow to" in decisions, decisions
        assert "idle for over 2 s" in decisions and "shrink to 1 (min 1)" in decisions, decisions
    finally:
        stop = run(["stop", *args], env, timeout=150)
    assert stop.returncode == 0, stop.stderr


@pytest.mark.timeout(300)
@pytest.mark.parametrize("system", ["slurm", "sge"])
def test_a_job_that_exits_at_once_is_retried_with_backoff_then_reported(system: str) -> None:
    require_system(system)
    pd = pool_profile("broken", system, ("echo 'module: not found'", "exit 3"))
    env = env_for(system)
    args = ["--profile", pd.name]
    start = run(["start", *args, "--engines", system, "--min", "1", "--max", "1", "--timeout", "120"],
                env, timeout=180)
    try:
        assert start.returncode != 0
        assert "the pool stopped: stopped submitting after 2 failed jobs in a row" in start.stderr, start.stderr
        assert "module: not found" in start.stderr
        pool = status(pd, env)["pool"]
        assert pool["stopped"] and pool["failures"] == 2
        failed = [d for d in pool["decisions"] if d["action"] == "failed"]
        assert len(failed) == 2 and "next submission in 1 s" in failed[0]["reason"]
        submits = [d["time"] for d in pool["decisions"] if d["action"] == "submit"]
        assert len(submits) == 2 and submits[1] - submits[0] >= 1.0  # backed off, no storm
        text = run(["status", *args], env, timeout=60).stdout
        assert "STOPPED: stopped submitting after 2 failed jobs" in text and "module: not found" in text
        time.sleep(3)
        assert len([d for d in status(pd, env)["pool"]["decisions"] if d["action"] == "submit"]) == 2
    finally:
        stop = run(["stop", *args], env, timeout=150)
    assert stop.returncode == 0, stop.stderr
    wait_gone(system, [r.job_id for r in read_jobs(pd)], env)


@pytest.mark.timeout(300)
def test_waits_for_engines_fail_quoting_the_job_output_when_the_pool_stops(tmp_path) -> None:
    """A pool whose jobs cannot start Python: the client's and the Cluster's waits raise
    PoolStopped with the job's output line instead of waiting out their timeout, and
    queue_status warns once. A laptop client over an SSH tunnel, with only a copy of the
    connection file (no run dir to read), hears it from the controller: waiting when the
    pool stops (a notice) and connecting after (the connect reply)."""
    import shutil
    import warnings

    from hpcpar.cluster import Cluster

    require_system("slurm")
    require_system("ssh")
    ssh = {"sshserver": "testhost", "ssh_config": "/opt/hpcpar-ssh/ssh_config", "timeout": 30}
    pd = pool_profile("nopython", "slurm", ("nosuchpython -c 'import hpcpar' || exit 127",))
    env = env_for("slurm")
    args = ["--profile", pd.name]
    start = run(["start", *args, "--engines", "slurm", "--min", "2", "--max", "2", "--daemonize"], env, timeout=180)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        laptop = shutil.copy(pd.client_file(), tmp_path / "laptop.json")
        with hpcpar.Client(laptop, **ssh) as far:
            assert far._tunnel is not None and far._pool_stopped() == ""
            assert read_pool(pd) is not None and not read_pool(pd).stopped  # the wait starts before the stop
            with pytest.raises(PoolStopped) as stopped:
                far.wait_for_engines(2, timeout=250, interactive=False)  # 2 failures, 1 s back-off: well before
        text = str(stopped.value)
        assert "0 of 2 engines registered, and the engine pool stopped submitting after 2 failed jobs" in text
        assert "nosuchpython: command not found" in text and "hpcpar scale N" in text
        assert isinstance(stopped.value, TimeoutError)  # ipyparallel-style except TimeoutError catches it
        with hpcpar.Client(laptop, **ssh) as late:  # connected after the stop
            with pytest.raises(PoolStopped, match="nosuchpython: command not found"):
                late.wait_for_engines(2, timeout=60, interactive=False)
        with hpcpar.Client(profile=pd.name, timeout=30) as rc:
            with pytest.raises(PoolStopped, match="nosuchpython: command not found"):
                rc.wait_for_engines(2, timeout=60)
            with pytest.warns(RuntimeWarning, match="nosuchpython: command not found"):
                rc.queue_status()
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                rc.queue_status()  # once per stop, not at every call
        cluster = Cluster.from_file(profile_dir=pd.path)
        with pytest.raises(PoolStopped, match="nosuchpython: command not found"):
            cluster.wait_for_engines_sync(2, timeout=250)
    finally:
        stop = run(["stop", *args], env, timeout=150)
    assert stop.returncode == 0, stop.stderr
    wait_gone("slurm", [r.job_id for r in read_jobs(pd)], env)


@pytest.mark.timeout(300)
def test_python_api_scale_adapt_and_stop_with_two_engines_per_job() -> None:
    """Cluster.scale / adapt / stop_adapt / pool_status on a cluster rebuilt from its file,
    jobs of 2 engines each; scale() called as in dask-jobqueue, adapt() awaited, the _sync twins; stop_cluster_sync stops the manager first and forgets the pool."""
    from hpcpar.cluster import Cluster
    from hpcpar.launchers.process import ProcessRef

    require_system("slurm")
    pd = make_profile("pyapi-slurm", POOL + "\n[batch.engines]\nengines_per_job = 2\n")
    env = env_for("slurm")
    start = run(["start", "--profile", pd.name, "--engines", "slurm", "--min", "2", "--max", "6", "-n", "2",
                 "--timeout", "120"], env, timeout=180)
    assert start.returncode == 0, start.stdout + start.stderr
    cluster = Cluster.from_file(profile_dir=pd.path)
    try:
        cluster.scale(5)  # 5 engines in jobs of 2: three jobs, six engines
        with hpcpar.Client(profile=pd.name, timeout=30) as rc:
            wait_until(lambda: len(rc.ids) == 6, 120, "six engines")
        assert len(our_jobs("slurm", pd, env)) == 3
        st = cluster.pool_status()
        assert (st["target"], st["adaptive"], st["engines_per_job"]) == (5, False, 2)
        async def make_adaptive() -> None:  # the Cluster API's convention: plain names are awaited
            await cluster.adapt(minimum=2, maximum=4)

        asyncio.run(make_adaptive())
        assert cluster.pool_status()["adaptive"] and cluster.pool_status()["target"] == 4
        with pytest.raises(ConfigError, match=r"scale\(5\) is above the pool's max of 4 engines"):
            cluster.scale_sync(5)  # the blocking twin; max is the pool's cap
        cluster.stop_adapt_sync()
        assert not cluster.pool_status()["adaptive"]
        manager = ProcessRef.of(read_pool(pd).manager_pid)
        assert manager.alive()
    finally:
        cluster.stop_cluster_sync()
    wait_until(lambda: not manager.alive(), 30, "the pool manager to exit")
    assert read_pool(pd) is None
    wait_until(lambda: our_jobs("slurm", pd, env) == [], 60, "the pool's jobs to leave the queue")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("system", ["slurm", "sge"])
def test_a_pool_of_mpi_engine_sets_grows_by_whole_mpi_jobs(system: str) -> None:
    """mode = "mpi": each pool job is one MPI engine set of engines_per_job ranks with its
    own COMM_WORLD (SLURM: mpiexec in the allocation; SGE: mpiexec in the mpi parallel
    environment); scaling up adds a whole set, whose ids are new and contiguous."""
    from test_mpi import require_mpi

    from hpcpar.launchers.mpi import default_mpiexec

    require_system(system)
    require_mpi()
    # Grid Engine jobs do not inherit this environment: the engines must import the hpcpar under test.
    lines = [f"export PYTHONPATH={os.environ['PYTHONPATH']}"] if os.environ.get("PYTHONPATH") else []
    mpi = (f'\n[batch.engines]\nmode = "mpi"\nengines_per_job = 2\nmpiexec = {json.dumps(default_mpiexec())}\n'
           f'prologue = {json.dumps(lines)}\n[slurm]\nmpi_launcher = "mpiexec"\n'
           f'[sge]\nmpi_pe = "{CI_ENV.get("HPCPAR_SGE_PE_MPI", "mpi")}"\n')
    pd = make_profile(f"mpipool-{system}", POOL + mpi)
    env = env_for(system)
    args = ["--profile", pd.name]
    start = run(["start", *args, "--engines", system, "--min", "2", "--max", "4", "-n", "2", "--timeout", "120"],
                env, timeout=180)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        with hpcpar.Client(profile=pd.name, timeout=30) as rc:
            rc.wait_for_engines(2, timeout=60, interactive=False)
            assert len(our_jobs(system, pd, env)) == 1  # one MPI job of two ranks
            run(["scale", "4", *args], env, timeout=60)
            wait_until(lambda: len(rc.ids) == 4, 120, "a second MPI set of two engines")
            assert rc.ids == [0, 1, 2, 3] and len(our_jobs(system, pd, env)) == 2
            rc[:].execute("r = (mpi_size, mpi_rank, comm.allreduce(1))", block=True)  # a collective per set
            ranks = rc[:].pull("r", block=True)
            assert ranks == [(2, 0, 2), (2, 1, 2), (2, 0, 2), (2, 1, 2)]  # two worlds of two ranks
            worlds = [rc._engines[i]["mpi_world"] for i in rc.ids]
            assert worlds[0] == worlds[1] != worlds[2] == worlds[3]
            if system == "sge":  # each set ran in a job of the MPI parallel environment, 2 slots
                rc[:].execute("import os; pe = (os.environ.get('PE'), os.environ.get('NSLOTS'))", block=True)
                assert rc[:].pull("pe", block=True) == [(CI_ENV.get("HPCPAR_SGE_PE_MPI", "mpi"), "2")] * 4
    finally:
        stop = run(["stop", *args], env, timeout=150)
    assert stop.returncode == 0, stop.stderr
    wait_gone(system, [r.job_id for r in read_jobs(pd)], env)
