"""Walltime on the real SLURM: an engine drains `drain` seconds before its job's end (no
new work; direct requests refused with an error naming the retirement; it leaves rc.ids
once idle), and a task still running when the scheduler kills the job fails with an
EngineError naming the walltime. In CI a missing SLURM fails these tests."""

from __future__ import annotations

import time

import pytest
from systems import require_system
from test_cluster_batch import env_for, make_profile, run

import hpcpar
from hpcpar.error import EngineError, RemoteError


def start(name: str, config: str, n: int = 1) -> tuple[object, list[str], dict[str, str]]:
    pd = make_profile(name, config)
    env = env_for("slurm")
    args = ["--profile", pd.name]
    p = run(["start", *args, "--engines", "slurm", "-n", str(n), "--timeout", "120"], env, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    return pd, args, env


@pytest.mark.timeout(240)
def test_a_draining_engine_refuses_direct_work_and_leaves() -> None:
    require_system("slurm")
    # A 60 s job whose engine drains 45 s before its end: about 15 s after it starts.
    pd, args, env = start("drain", '[batch.engines]\nwalltime = "00:01:00"\ndrain = 45\n')
    try:
        with hpcpar.Client(profile=pd.name, timeout=30) as rc:
            rc.wait_for_engines(1, timeout=60, interactive=False)
            [eid] = rc.ids
            view = rc[eid]
            busy = view.apply_async(lambda: __import__("time").sleep(25) or "finished")  # spans the drain
            deadline = time.monotonic() + 60
            while (rc.queue_status(verbose=True)[eid].get("status") or {}).get("state") != "draining":
                assert time.monotonic() < deadline, "the engine never started draining"
                time.sleep(0.5)
            with pytest.raises((EngineError, RemoteError), match=rf"engine {eid} is retiring: batch job \d+ reaches "
                                                                 "its walltime at"):
                view.apply_sync(lambda: 1)
            assert busy.get(timeout=60) == "finished"  # what it held is finished, not dropped
            deadline = time.monotonic() + 30
            while eid in rc.ids:
                assert time.monotonic() < deadline, "the drained engine did not leave"
                time.sleep(0.3)
    finally:
        run(["stop", *args], env, timeout=150)


@pytest.mark.timeout(240)
def test_a_task_killed_by_the_walltime_fails_naming_it() -> None:
    require_system("slurm")
    pd, args, env = start("killed", '[batch.engines]\nwalltime = "00:00:40"\ndrain = 0\n')
    try:
        with hpcpar.Client(profile=pd.name, timeout=30) as rc:
            rc.wait_for_engines(1, timeout=60, interactive=False)
            ar = rc.load_balanced_view().apply_async(lambda: __import__("time").sleep(300))
            with pytest.raises((EngineError, RemoteError), match="reached its walltime"):
                ar.get(timeout=150)
    finally:
        run(["stop", *args], env, timeout=150)
