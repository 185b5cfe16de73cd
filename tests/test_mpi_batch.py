"""MPI engines inside real batch jobs: one SLURM job whose ranks start with `mpiexec` or
`srun --mpi=pmi2`, one Grid Engine job in the `mpi` parallel environment, and one job in PBS
Pro and Torque syntax (SLURM's qsub wrappers, started by `mpiexec`). The engines
share COMM_WORLD, id == rank, and stopping the cluster from its state file (what
`hpcpar stop` does) cancels the job and leaves no engine process.

In CI (CI=true) a missing system or missing MPI fails these tests; elsewhere they skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from cluster_helpers import FAST_HEARTBEAT, check_batch_job_gone, stop_profile
from systems import CI_ENV, PBS_BIN, require_system
from test_mpi import require_mpi

from hpcpar.cluster import Cluster
from hpcpar.connection import CONNECTION_ENV
from hpcpar.launchers.mpi import default_mpiexec
from hpcpar.launchers.process import ProcessRef
from hpcpar.launchers.sge import SGELauncher
from hpcpar.launchers.slurm import SlurmLauncher

FAST = {"poll_interval": 0.2, "poll_max_interval": 1.0, "command_timeout": 30.0, "walltime": "00:10:00"}


@pytest.fixture
def sge_env(monkeypatch):
    for name in ("SGE_ROOT", "SGE_CELL"):
        if name in CI_ENV:
            monkeypatch.setenv(name, CI_ENV[name])


def run_mpi_job(cls, options: dict, n: int, profile: str, job_var: str) -> None:
    require_mpi()
    cluster = Cluster(n=0, profile=profile, cluster_id="", controller_args=list(FAST_HEARTBEAT))
    cluster.start_controller_sync()
    try:
        engine_json = cluster.profile_dir.engine_file("").read_text()
        launcher = cls(role="engines", n=n, profile_dir=cluster.profile_dir,
                       options={**FAST, "mode": "mpi", "mpiexec": default_mpiexec(), **options})
        assert launcher.mpi
        cluster.engines["mpi-batch"] = launcher
        log = str(cluster.profile_dir.log_file("engine-0-{index}"))
        launcher.start([sys.executable, "-m", "hpcpar", "engine", "--mpi"], {CONNECTION_ENV: engine_json}, log)
        cluster._save()
        rc = cluster.connect_client_sync(timeout=30)
        try:
            rc.wait_for_engines(n, timeout=90, interactive=False)
        except TimeoutError:
            outputs = sorted(cluster.profile_dir.log.glob("engine-0*.out"))
            text = "\n".join(p.read_text(errors="replace")[-3000:] for p in outputs)
            raise AssertionError(f"{launcher.describe()} {launcher.poll(force=True)}:\n{text}") from None
        assert rc.ids == list(range(n))
        view = rc[:]
        view.execute(f"import os\njob = os.environ.get({job_var!r})\ntotal = comm.allreduce(mpi_rank)", block=True)
        jobs = view["job"]
        assert jobs == [launcher.job_ids[0]] * n  # every rank runs inside the one job
        assert view["total"] == [n * (n - 1) // 2] * n
        assert view.pull("mpi_size", block=True) == [n] * n
        pids = [ProcessRef.of(e["pid"]) for e in rc._engines.values()]
        rc.close()
        cluster._client = None
    except BaseException:
        cluster.stop_cluster_sync()
        raise
    # What `hpcpar stop` does: rebuild the cluster from its state file and stop it.
    Cluster.from_file(cluster.state_file).stop_cluster_sync()
    check_batch_job_gone(launcher, pids)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("starter", ["srun", "mpiexec"])
def test_slurm_job_of_mpi_engines(starter, hpcpar_dir) -> None:
    require_system("slurm")
    options = {"mpi_launcher": starter, "mpi_args": ["--mpi=pmi2"] if starter == "srun" else []}
    run_mpi_job(SlurmLauncher, options, 3, f"mpi-slurm-{starter}-{os.getpid()}", "SLURM_JOB_ID")


@pytest.mark.timeout(150)
def test_sge_job_of_mpi_engines_in_the_mpi_parallel_environment(hpcpar_dir, sge_env) -> None:
    require_system("sge")
    pe = CI_ENV.get("HPCPAR_SGE_PE_MPI", "mpi")
    run_mpi_job(SGELauncher, {"mpi_pe": pe}, 3, f"mpi-sge-{os.getpid()}", "JOB_ID")


@pytest.mark.timeout(150)
def test_hpcpar_start_and_stop_an_mpi_job_in_slurm_from_the_profile(hpcpar_dir) -> None:
    """`hpcpar start --engines slurm` with mode = "mpi" in the profile: one job, srun starts
    the ranks; `hpcpar stop` from another process cancels it."""
    require_system("slurm")
    require_mpi()
    from cluster_helpers import hpcpar_cmd

    import hpcpar
    from hpcpar.paths import ProfileDir

    profile = f"mpi-slurm-cli-{os.getpid()}"
    pd = ProfileDir.for_profile(profile, create=True)
    (pd.path / "config.toml").write_text(
        '[batch]\nmode = "mpi"\nwalltime = "00:10:00"\npoll_interval = 0.2\n'
        '[slurm]\nmpi_launcher = "srun"\nmpi_args = ["--mpi=pmi2"]\n'
    )
    try:
        start = subprocess.run(hpcpar_cmd("start", "-n", "2", "--engines", "slurm", "--ip", "*", "--profile", profile,
                                          "--daemonize", "--wait", "--timeout", "90"),
                               capture_output=True, text=True, timeout=120)
        assert start.returncode == 0, start.stdout + start.stderr
        cluster = Cluster.from_file(pd.state_file(""))
        [launcher] = cluster.engine_sets
        assert isinstance(launcher, SlurmLauncher) and launcher.mpi and len(launcher.job_ids) == 1
        with hpcpar.Client(profile=profile, timeout=20) as rc:
            rc.wait_for_engines(2, timeout=30, interactive=False)
            assert rc.ids == [0, 1]
            rc[:].execute("import os\njob = os.environ['SLURM_JOB_ID']\nt = comm.allreduce(1)", block=True)
            assert rc[:]["job"] == launcher.job_ids * 2 and rc[:]["t"] == [2, 2]
            pids = [ProcessRef.of(e["pid"]) for e in rc._engines.values()]
    except BaseException:
        stop_profile(profile, check=False)
        raise
    stop_profile(profile)
    check_batch_job_gone(launcher, pids)


def slurm_jobs(job_ids: list[str]) -> list[str]:
    """squeue lines still showing these jobs (the PBS wrappers run on SLURM)."""
    out = subprocess.run(["squeue", "--noheader", "--format=%F %i %T"], capture_output=True, text=True,
                         timeout=30).stdout
    return [line for line in out.splitlines()
            if line.split()[0] in job_ids and line.split()[2] not in ("COMPLETED", "CANCELLED")]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("system", ["pbs", "torque"])
def test_hpcpar_start_and_stop_an_mpi_job_with_pbs_syntax(system, hpcpar_dir, monkeypatch) -> None:
    """`hpcpar start --engines pbs|torque` with mode = "mpi": one job (submitted by the Torque/PBS
    qsub wrappers that run on SLURM), mpiexec starts the ranks, id == rank, allreduce works;
    `hpcpar stop` from another process cancels the job and no engine process survives."""
    require_system("pbs")
    require_mpi()
    from cluster_helpers import hpcpar_cmd

    import hpcpar
    from hpcpar.launchers.pbs import PBSLauncher
    from hpcpar.paths import ProfileDir

    monkeypatch.setenv("PATH", f"{PBS_BIN}{os.pathsep}{os.environ['PATH']}")  # qsub/qstat/qdel: PBS flavour
    profile = f"mpi-{system}-cli-{os.getpid()}"
    pd = ProfileDir.for_profile(profile, create=True)
    n = 3
    (pd.path / "config.toml").write_text(
        '[controller]\nheartbeat_interval = 0.25\nheartbeat_timeout = 2.0\n'
        # engines_per_node: one select chunk / nodes=1:ppn=N. SLURM's sbatch reads the chunk
        # count of -l select=N (and nodes=N) as a node count, and this cluster has one node.
        f'[batch]\nmode = "mpi"\nengines_per_node = {n}\nwalltime = "00:05:00"\n'
        'poll_interval = 0.2\npoll_max_interval = 1.0\n'
        f'[{system}]\nmpiexec = {default_mpiexec()!r}\n'
    )
    try:
        start = subprocess.run(hpcpar_cmd("start", "-n", str(n), "--engines", system, "--ip", "*",
                                          "--profile", profile, "--daemonize", "--wait", "--timeout", "40"),
                               capture_output=True, text=True, timeout=45)
        assert start.returncode == 0, start.stdout + start.stderr
        cluster = Cluster.from_file(pd.state_file(""))
        [launcher] = cluster.engine_sets
        assert isinstance(launcher, PBSLauncher) and launcher.name == system
        assert launcher.mpi and len(launcher.job_ids) == 1
        with hpcpar.Client(profile=profile, timeout=10) as rc:
            rc.wait_for_engines(n, timeout=10, interactive=False)
            assert rc.ids == list(range(n))
            view = rc[:]
            view.execute("import os\njob = os.environ['PBS_JOBID']\ntotal = comm.allreduce(mpi_rank)", block=True)
            assert view.pull("mpi_rank", block=True) == rc.ids  # engine id == MPI rank
            assert view["job"] == launcher.job_ids * n  # every rank runs inside the one job
            assert view["total"] == [n * (n - 1) // 2] * n
            pids = [ProcessRef.of(e["pid"]) for e in rc._engines.values()]
    except BaseException:
        subprocess.run(hpcpar_cmd("stop", "--profile", profile), capture_output=True, timeout=30)
        raise
    stop = subprocess.run(hpcpar_cmd("stop", "--profile", profile), capture_output=True, text=True, timeout=30)
    assert stop.returncode == 0, stop.stderr
    deadline = time.monotonic() + 15
    while (left := slurm_jobs(launcher.job_ids)) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not left, f"still in the queue after hpcpar stop: {left}"
    while any(p.alive() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(p.alive() for p in pids), "engine processes outlived the cancelled job"
