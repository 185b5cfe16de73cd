"""Submit, poll and cancel small scripts through the launcher classes on the real SLURM,
Grid Engine and PBS (SLURM's qsub wrappers) that ci/setup.sh brings up. In CI a missing
system fails these tests (tests/systems.py); elsewhere they are skipped."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from systems import CI_ENV, PBS_BIN, require_system

from hpcpar.launchers.batch import BatchLauncher
from hpcpar.launchers.build import recorded_job_states, stop_recorded_jobs
from hpcpar.launchers.ledger import read_jobs
from hpcpar.launchers.pbs import PBSLauncher, TorqueLauncher
from hpcpar.launchers.sge import SGELauncher
from hpcpar.launchers.slurm import SlurmLauncher
from hpcpar.paths import ProfileDir

FAST = {"poll_interval": 0.2, "poll_max_interval": 1.0, "command_timeout": 30.0}
SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]
INDEX_VARS = ("SLURM_ARRAY_TASK_ID", "SGE_TASK_ID", "PBS_ARRAY_INDEX", "PBS_ARRAYID")


def marker_command(directory: Path) -> list[str]:
    """Writes <directory>/task-<array index> with the job's view of a few variables."""
    code = (
        "import os, sys; d = sys.argv[1]\n"
        f"idx = next((os.environ[v] for v in {INDEX_VARS!r} if os.environ.get(v, 'undefined') != 'undefined'), '0')\n"
        "keys = ('MARK', 'NSLOTS', 'SLURM_CPUS_PER_TASK', 'SLURM_PROCID')\n"
        "open(os.path.join(d, 'task-' + idx + '-' + os.environ.get('SLURM_PROCID', '0')), 'w')"
        ".write(' '.join(k + '=' + os.environ.get(k, '') for k in keys))\n"
    )
    return [sys.executable, "-c", code, str(directory)]


@pytest.fixture
def profile(isolated: Path) -> ProfileDir:
    return ProfileDir.for_profile("real", create=True)


@pytest.fixture
def pbs_path(monkeypatch):
    monkeypatch.setenv("PATH", f"{PBS_BIN}{os.pathsep}{os.environ['PATH']}")


def sge_env(monkeypatch) -> None:
    for name in ("SGE_ROOT", "SGE_CELL"):
        if name in CI_ENV:
            monkeypatch.setenv(name, CI_ENV[name])


def wait_for_files(directory: Path, count: int, timeout: float) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = sorted(directory.glob("task-*"))
        if len(files) >= count:
            return files
        time.sleep(0.2)
    raise AssertionError(f"only {sorted(p.name for p in directory.glob('task-*'))} after {timeout} s")


def run_array(launcher: BatchLauncher, profile: ProfileDir, tmp_path: Path, env: dict[str, str]) -> list[str]:
    out = tmp_path / "marks"
    out.mkdir()
    launcher.start(marker_command(out), env, str(profile.log / f"engines-{launcher.name}.log"))
    assert [r.job_id for r in read_jobs(profile, launcher.cluster_id)] == launcher.job_ids
    assert launcher.wait({"done", "failed", "cancelled"}, timeout=90) == "done", launcher.poll(force=True)
    files = wait_for_files(out, launcher.n, 10)
    return [f.name for f in files] + [f.read_text() for f in files]


def cancel_running(launcher: BatchLauncher, profile: ProfileDir) -> None:
    launcher.start(SLEEP, {}, str(profile.log / f"sleep-{launcher.name}.log"))
    assert launcher.wait({"running", "failed", "done"}, timeout=90) == "running"
    launcher.stop()
    assert read_jobs(profile, launcher.cluster_id) == []
    fresh = type(launcher)(role="engines", n=launcher.n, job_ids=launcher.job_ids, options=dict(launcher.options))
    assert fresh.wait({"cancelled", "done", "failed"}, timeout=60) in ("cancelled", "done")
    fresh.cancel(fresh.job_ids)  # already gone: not an error


# ----- SLURM ---------------------------------------------------------------------------
@pytest.mark.timeout(150)
def test_slurm_array_runs_each_task(profile, tmp_path) -> None:
    require_system("slurm")
    launcher = SlurmLauncher(role="engines", n=3, profile_dir=profile, cluster_id="s1",
                             options={**FAST, "walltime": "00:05:00", "memory": "64M", "cpus_per_engine": 2})
    names_and_text = run_array(launcher, profile, tmp_path, {"MARK": "x y"})
    assert names_and_text[:3] == ["task-1-0", "task-2-0", "task-3-0"]
    assert all("MARK=x y" in t and "SLURM_CPUS_PER_TASK=2" in t for t in names_and_text[3:])


@pytest.mark.timeout(150)
def test_slurm_mpi_mode_starts_n_tasks_with_srun(profile, tmp_path) -> None:
    require_system("slurm")
    launcher = SlurmLauncher(role="engines", n=3, profile_dir=profile, options={**FAST, "mode": "mpi"})
    names = run_array(launcher, profile, tmp_path, {})[:3]
    assert names == ["task-0-0", "task-0-1", "task-0-2"]  # one job, ranks 0..2


@pytest.mark.timeout(150)
def test_slurm_cancel_and_ledger(profile) -> None:
    require_system("slurm")
    cancel_running(SlurmLauncher(role="engines", n=2, profile_dir=profile, options=FAST), profile)


@pytest.mark.timeout(150)
def test_slurm_stop_from_another_process_after_the_starter_died(profile) -> None:
    require_system("slurm")
    starter = (
        "import sys, os\n"
        "from hpcpar.launchers.slurm import SlurmLauncher\n"
        "from hpcpar.paths import ProfileDir\n"
        "l = SlurmLauncher(role='engines', n=2, profile_dir=ProfileDir.for_profile('real'), cluster_id='k')\n"
        f"l.start({SLEEP!r}, {{}}, '/tmp/hpcpar-killed.log')\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", starter], env=os.environ.copy())
    assert done.returncode == -9
    [record] = read_jobs(profile, "k")
    states = recorded_job_states(profile, "k")
    assert states[record.job_id][1].state in ("pending", "running")
    assert stop_recorded_jobs(profile, "k") == [record.job_id]
    squeue = subprocess.run(["squeue", "--noheader", "--jobs", record.job_id, "--format=%T"], capture_output=True, text=True)
    assert set(squeue.stdout.split()) <= {"CANCELLED", "COMPLETING"}


# ----- Grid Engine ---------------------------------------------------------------------
@pytest.mark.timeout(150)
def test_sge_array_with_parallel_environment(profile, tmp_path, monkeypatch) -> None:
    require_system("sge")
    sge_env(monkeypatch)
    pe = CI_ENV.get("HPCPAR_SGE_PE_SMP", "smp")
    launcher = SGELauncher(role="engines", n=2, profile_dir=profile, cluster_id="g",
                           options={**FAST, "pe": pe, "cpus_per_engine": 2, "walltime": "00:05:00"})
    names_and_text = run_array(launcher, profile, tmp_path, {"MARK": "sge"})
    assert names_and_text[:2] == ["task-1-0", "task-2-0"]
    assert all("MARK=sge" in t and "NSLOTS=2" in t for t in names_and_text[2:])
    assert list(profile.log.glob("engines-sge-*.out"))  # -o with $JOB_ID.$TASK_ID expanded


@pytest.mark.timeout(150)
def test_sge_cancel(profile, monkeypatch) -> None:
    require_system("sge")
    sge_env(monkeypatch)
    cancel_running(SGELauncher(role="engines", n=2, profile_dir=profile, options=FAST), profile)


# ----- PBS syntax, run by SLURM's qsub/qstat/qdel wrappers -----------------------------
@pytest.mark.timeout(150)
@pytest.mark.parametrize("cls", [PBSLauncher, TorqueLauncher])
def test_pbs_syntax_array_runs_each_task(cls, profile, tmp_path, pbs_path) -> None:
    require_system("pbs")
    launcher = cls(role="engines", n=2, profile_dir=profile, options={**FAST, "walltime": "00:05:00", "memory": "64M"})
    names = run_array(launcher, profile, tmp_path, {"MARK": "pbs"})
    assert names[:2] == ["task-1-0", "task-2-0"]
    if cls is PBSLauncher:
        assert launcher.options["status_format"] == "text"  # the wrapper's qstat has no -F json


@pytest.mark.timeout(150)
@pytest.mark.parametrize("cls", [PBSLauncher, TorqueLauncher])
def test_pbs_syntax_cancel(cls, profile, pbs_path) -> None:
    require_system("pbs")
    cancel_running(cls(role="engines", n=2, profile_dir=profile, options=FAST), profile)


@pytest.mark.timeout(150)
def test_slurm_job_runs_on_the_second_node_in_its_network_namespace(profile, tmp_path) -> None:
    require_system("slurm-netns")
    partition = CI_ENV.get("HPCPAR_SLURM_NETNS_PARTITION", "netns")
    node = CI_ENV.get("HPCPAR_SLURM_NETNS_NODE", "compute1")
    out = tmp_path / "where"
    code = f"import socket; open({str(out)!r}, 'w').write(socket.gethostname())"
    launcher = SlurmLauncher(role="engines", n=1, profile_dir=profile, options={**FAST, "queue": partition})
    launcher.start([sys.executable, "-c", code], {}, str(profile.log / "netns.log"))
    assert launcher.wait({"done", "failed", "cancelled"}, timeout=90) == "done"
    assert out.read_text() == node


# ----- one task of a live array (what a restored controller asks about) -----------------
TASK_ID = [sys.executable, "-c", "import sys, time; from hpcpar.engine.batchjob import batch_job; "
           "j = batch_job(); open(sys.argv[1] + '/task-' + j.task_id, 'w').write(j.job_id); time.sleep(120)"]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("system", ["slurm", "sge"])
def test_a_finished_task_of_a_live_array_is_asked_about_alone(system, profile, tmp_path, monkeypatch) -> None:
    """Each task names itself as the scheduler does (engine/batchjob.py); with task 2 cancelled
    the status command reports it gone while task 1, and so the array, runs on."""
    require_system(system)
    cls: type[BatchLauncher] = SlurmLauncher if system == "slurm" else SGELauncher
    if system == "sge":
        sge_env(monkeypatch)
    out = tmp_path / "tasks"
    out.mkdir()
    launcher = cls(role="engines", n=2, profile_dir=profile, cluster_id="t", options={**FAST, "walltime": "00:05:00"})
    # The job runs this checkout's hpcpar (SGE jobs do not inherit PYTHONPATH otherwise).
    code = os.path.dirname(os.path.dirname(os.path.abspath(__import__("hpcpar").__file__)))
    launcher.start([*TASK_ID, str(out)], {"PYTHONPATH": code}, str(profile.log / f"tasks-{system}.log"))
    try:
        [array] = launcher.job_ids
        sep = "_" if system == "slurm" else "."
        files = wait_for_files(out, 2, 90)
        assert [f.name for f in files] == [f"task-{array}{sep}1", f"task-{array}{sep}2"]
        assert {f.read_text() for f in files} == {array}  # the ledger's id, the dashboard groups by it
        first, second = f"{array}{sep}1", f"{array}{sep}2"
        cancel = ["scancel", second] if system == "slurm" else ["qdel", array, "-t", "2"]
        subprocess.run(cancel, check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 60
        while (found := launcher.query([first, second, array])).get(second) and found[second].state == "running":
            assert time.monotonic() < deadline, found
            time.sleep(0.5)
        assert second not in found or found[second].state in ("cancelled", "done", "failed"), found
        assert (found[first].state, found[array].state) == ("running", "running"), found
    finally:
        launcher.stop()
