"""After a controller crash and ``--restore``, engines whose batch job ended meanwhile are
given up as soon as the batch system says the job is gone (their tasks fail naming the
job), not when the 60 s re-attach window closes; engines of live jobs re-attach and deliver.
The same for one task of a job array whose other task still runs (SLURM asked about ``17_2``).
Real SLURM, engines on the netns node (another host: the controller cannot look at their
processes). In CI a missing system fails this test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from systems import CI_ENV, require_system
from test_cluster_batch import env_for, make_profile, run, wait_gone

import hpcpar
from hpcpar.controller import jobcheck
from hpcpar.error import RemoteError
from hpcpar.launchers.ledger import read_jobs


def _sleep_then(seconds: float, value: str) -> str:
    import time

    time.sleep(seconds)
    return value


def _slurm_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "--noheader", "--states=all", f"--jobs={job_id}", "--format=%T"],
                         capture_output=True, text=True, timeout=30).stdout.split()
    return out[0] if out else "GONE"


@pytest.mark.timeout(240)
def test_restore_drops_engines_whose_batch_job_is_gone_at_once() -> None:
    require_system("slurm-netns")
    partition = CI_ENV.get("HPCPAR_SLURM_NETNS_PARTITION", "netns")
    pd = make_profile("restorejob")
    env = env_for("slurm")
    args = ["--profile", pd.name]
    start = run(["start", *args, "--engines", "slurm", "-n", "2", "--queue", partition, "--set",
                 'batch.mode="jobs"', "--daemonize", "--wait", "--timeout", "120"], env, timeout=150)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        rc = hpcpar.Client(profile=pd.name, timeout=30)
        rc.wait_for_engines(2, timeout=60, interactive=False)
        jobs = {e["id"]: e["job_id"] for e in rc._engines.values()}
        assert sorted(jobs.values()) == sorted(r.job_id for r in read_jobs(pd) if r.role == "engines")
        doomed, kept = sorted(jobs)
        lost = rc[doomed].apply_async(_sleep_then, 300, "never")
        survives = rc[kept].apply_async(_sleep_then, 8, "kept")
        time.sleep(1.5)  # both tasks are on their engines, and in the database
        controller = json.loads(pd.client_file().read_text())["controller_pid"]
        os.kill(controller, signal.SIGKILL)
        subprocess.run(["scancel", jobs[doomed]], timeout=30, check=True)  # its job ends with the controller
        deadline = time.monotonic() + 60
        while _slurm_state(jobs[doomed]) not in ("CANCELLED", "GONE"):
            assert time.monotonic() < deadline, f"job {jobs[doomed]} still {_slurm_state(jobs[doomed])}"
            time.sleep(0.5)
        restore = run(["start", *args, "--restore"], env, timeout=120)
        assert restore.returncode == 0, restore.stdout + restore.stderr
        # The restored controller asked SLURM: the task fails naming the job, not the closed window.
        with pytest.raises(RemoteError) as failed:
            lost.get(timeout=120)
        text = str(failed.value)
        assert failed.value.ename == "EngineError", text
        assert f"engine {doomed} held task" in text and f"slurm job {jobs[doomed]}" in text, text
        assert "batch job is gone" in text and "did not re-attach" not in text, text
        assert survives.get(timeout=120) == "kept"  # the live job's engine re-attached
        assert rc[kept].apply_sync(_sleep_then, 0, "still serving") == "still serving"
        rc.close()
    finally:
        stop = run(["stop", *args], env, timeout=150)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    wait_gone("slurm", list(jobs.values()), env)


def _array_of_two(system: str, name: str) -> tuple:
    """A cluster whose 2 engines are the 2 tasks of one array on the netns node, each busy:
    (profile, env, args, array id, client, engine -> task id, doomed, kept, lost, survives)."""
    partition = CI_ENV.get("HPCPAR_SLURM_NETNS_PARTITION", "netns")
    pd = make_profile(name)
    env = env_for(system)
    args = ["--profile", pd.name]
    start = run(["start", *args, "--engines", system, "-n", "2", "--queue", partition, "--set",
                 'batch.mode="array"', "--daemonize", "--wait", "--timeout", "120"], env, timeout=150)
    assert start.returncode == 0, start.stdout + start.stderr
    [array] = [r.job_id for r in read_jobs(pd) if r.role == "engines"]
    rc = hpcpar.Client(profile=pd.name, timeout=30)
    rc.wait_for_engines(2, timeout=60, interactive=False)
    tasks = {e["id"]: e["job_id"] for e in rc._engines.values()}
    assert sorted(tasks.values()) == [f"{array}_1", f"{array}_2"]  # each engine names its task
    doomed = next(eid for eid, task in tasks.items() if task == f"{array}_2")
    kept = next(eid for eid in tasks if eid != doomed)
    lost = rc[doomed].apply_async(_sleep_then, 300, "never")
    survives = rc[kept].apply_async(_sleep_then, 8, "kept")
    time.sleep(1.5)  # both tasks are on their engines, and in the database
    return pd, env, args, array, rc, tasks, doomed, kept, lost, survives


def _crash_and_cancel(pd, env, args, tasks: dict[int, str], doomed: int, kept: int) -> None:
    """SIGKILL the controller, cancel the doomed engine's array task (the other runs on), restore."""
    controller = json.loads(pd.client_file().read_text())["controller_pid"]
    os.kill(controller, signal.SIGKILL)
    subprocess.run(["scancel", tasks[doomed]], timeout=30, check=True)
    deadline = time.monotonic() + 60
    while _slurm_state(tasks[doomed]) not in ("CANCELLED", "GONE"):
        assert time.monotonic() < deadline, f"task {tasks[doomed]} still {_slurm_state(tasks[doomed])}"
        time.sleep(0.5)
    assert _slurm_state(tasks[kept]) == "RUNNING"
    restore = run(["start", *args, "--restore"], env, timeout=120)
    assert restore.returncode == 0, restore.stdout + restore.stderr


@pytest.mark.timeout(240)
def test_restore_drops_engines_of_a_finished_array_task_at_once() -> None:
    """An array of 2 engine tasks; task 2 is cancelled while the controller is down, task 1
    runs on: the restored controller asks SLURM about ``<array>_2`` itself, not the array."""
    require_system("slurm-netns")
    pd, env, args, array, rc, tasks, doomed, kept, lost, survives = _array_of_two("slurm", "restoretask")
    try:
        _crash_and_cancel(pd, env, args, tasks, doomed, kept)
        with pytest.raises(RemoteError) as failed:
            lost.get(timeout=120)
        text = str(failed.value)
        assert failed.value.ename == "EngineError", text
        assert f"engine {doomed} held task" in text and f"slurm job {tasks[doomed]}: CANCELLED" in text, text
        assert "did not re-attach" not in text, text  # not the closed 60 s window
        assert survives.get(timeout=120) == "kept"  # the live task's engine re-attached
        assert rc[kept].apply_sync(_sleep_then, 0, "still serving") == "still serving"
        rc.close()
    finally:
        stop = run(["stop", *args], env, timeout=150)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    wait_gone("slurm", [array], env)


@pytest.mark.timeout(240)
def test_restore_keeps_the_live_task_of_a_pbs_array() -> None:
    """PBS syntax on SLURM's wrappers: ``qstat -f <array>`` answers with the state of the task
    that holds the array's id (``C`` once task 2 is cancelled, task 1 running), so the
    restored controller must not take it for the array's: task 1's engine stays and delivers."""
    require_system("pbs")
    require_system("slurm-netns")
    pd, env, args, array, rc, tasks, doomed, kept, lost, survives = _array_of_two("pbs", "restorepbs")
    pid = rc._engines[kept]["pid"]  # the netns node shares this host's pid namespace
    try:
        # Task 1's engine is stopped across the restore, so it cannot re-attach before the
        # restored controller has asked the batch system about its job a few times.
        os.kill(pid, signal.SIGSTOP)
        _crash_and_cancel(pd, env, args, tasks, doomed, kept)
        time.sleep(3 * jobcheck.CHECK_EVERY)
        os.kill(pid, signal.SIGCONT)
        assert survives.get(timeout=120) == "kept"  # not given up for its array's "C"
        assert rc[kept].apply_sync(_sleep_then, 0, "still serving") == "still serving"
        rc.close()
    finally:
        os.kill(pid, signal.SIGCONT)
        stop = run(["stop", *args], env, timeout=150)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    wait_gone("pbs", [array], env)
