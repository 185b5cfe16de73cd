"""A controller SIGKILLed again while `hpcpar start --restore` is still recovering, then
restored a second time: nothing is lost (issue #15; the single crash is test_crash_recovery.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from cluster_helpers import hpcpar_cmd

import hpcpar

pytestmark = pytest.mark.timeout(300)


def _farm_task(i: int, path: str, delay: float) -> int:
    import time

    time.sleep(delay)
    with open(path, "a") as f:
        f.write(f"{i}\n")
    return i * 3


def _controller_pid(profile: str) -> int:
    return json.loads(hpcpar.paths.ProfileDir.for_profile(profile).client_file().read_text())["controller_pid"]


def _restore(profile: str) -> None:
    out = subprocess.run(hpcpar_cmd("start", "--profile", profile, "--restore"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def _restores_completed(profile: str) -> int:
    pd = hpcpar.paths.ProfileDir.for_profile(profile)
    return sum(p.read_text(errors="replace").count("restore complete") for p in pd.log.glob("controller*.log"))


def test_controller_killed_again_during_restore_loses_nothing(tmp_path):
    profile = f"crash2-{os.getpid()}"
    runs = tmp_path / "runs.txt"
    out = subprocess.run(hpcpar_cmd("start", "--profile", profile, "-n", "3", "--daemonize", "--wait"),
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    try:
        rc = hpcpar.Client(profile=profile, timeout=30)
        rc.wait_for_engines(3, timeout=60, interactive=False)
        # Results the client holds before the first crash.
        quick = [rc[i % 3].apply_async(pow, i, 2) for i in range(30)]
        assert [ar.get(timeout=30) for ar in quick] == [i * i for i in range(30)]
        view = rc.load_balanced_view()
        # Long tasks: on the engines through both crashes; short ones: a farm in every state.
        long = [view.apply_async(_farm_task, 1000 + i, str(runs), 6.0) for i in range(3)]
        time.sleep(0.5)
        ars = [view.apply_async(_farm_task, i, str(runs), 0.01) for i in range(300)]
        direct = rc[1].apply_async(_farm_task, 2000, str(runs), 0.01)  # behind a long task on engine 1
        time.sleep(1.0)  # the database has the submissions (the hub commits 20 times a second)

        os.kill(_controller_pid(profile), signal.SIGKILL)
        time.sleep(0.5)
        before = _restores_completed(profile)
        _restore(profile)
        # At once: engines are re-attaching and replaying, the long tasks still run.
        os.kill(_controller_pid(profile), signal.SIGKILL)
        interrupted = _restores_completed(profile) == before
        time.sleep(0.5)
        _restore(profile)

        # The same client gets every result; none fails.
        assert [ar.get(timeout=120) for ar in ars] == [i * 3 for i in range(300)]
        assert [ar.get(timeout=120) for ar in long] == [(1000 + i) * 3 for i in range(3)]
        assert direct.get(timeout=120) == 2000 * 3
        ran = [int(x) for x in runs.read_text().split()]
        assert set(ran) == set(range(300)) | {1000, 1001, 1002, 2000}
        # A new client: the results received before the crashes and after are in the restored hub.
        with hpcpar.Client(profile=profile, timeout=30) as other:
            ids = [ar.msg_ids[0] for ar in quick]
            assert other.get_result(ids, block=False).get(timeout=60) == [i * i for i in range(30)]
            ids = [ar.msg_ids[0] for ar in ars[-20:] + long]
            assert other.get_result(ids, block=False).get(timeout=60) == \
                [i * 3 for i in range(280, 300)] + [(1000 + i) * 3 for i in range(3)]
            assert other[:].apply_sync(pow, 3, 2) == [9, 9, 9]
        rc.close()
        print(f"second SIGKILL came before the first restore completed: {interrupted}")
    finally:
        subprocess.run(hpcpar_cmd("stop", "--profile", profile), timeout=90)


def _sleep_then(x: int, delay: float) -> int:
    import time

    time.sleep(delay)
    return x


def test_tasks_of_an_engine_that_died_with_the_controller_fail_at_once(tmp_path):
    """The controller and one engine (on this host) SIGKILLed together: after --restore the dead
    engine's tasks do not wait out the 60 s re-attach window; its direct task fails with
    EngineError naming it, its load-balanced task with retries=1 runs again on the live engine."""
    profile = f"crash-dead-{os.getpid()}"
    out = subprocess.run(hpcpar_cmd("start", "--profile", profile, "-n", "2", "--daemonize", "--wait"),
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    try:
        rc = hpcpar.Client(profile=profile, timeout=30)
        rc.wait_for_engines(2, timeout=60, interactive=False)
        pids = dict(zip(rc.ids, rc[:].apply_sync(os.getpid)))
        direct = rc[0].apply_async(_sleep_then, 1, 8.0)
        lb = rc.load_balanced_view(targets=[0]).apply_async(_sleep_then, 2, 8.0)
        view = rc.load_balanced_view()
        with view.temp_flags(retries=1):
            retried = view.apply_async(_sleep_then, 3, 8.0)
        alive = rc[1].apply_async(_sleep_then, 4, 3.0)
        time.sleep(1.5)  # all running (the database has them on their engines)
        os.kill(_controller_pid(profile), signal.SIGKILL)
        os.kill(pids[0], signal.SIGKILL)
        time.sleep(0.5)
        _restore(profile)
        # Well within the 60 s window: the dead engine's tasks are settled.
        with pytest.raises(hpcpar.error.EngineError, match=r"engine 0 .*died too"):
            direct.get(timeout=30)
        with pytest.raises(hpcpar.error.EngineError, match=r"engine 0 .*died too"):
            lb.get(timeout=30)
        assert alive.get(timeout=30) == 4
        assert retried.get(timeout=60) == 3  # wherever it ran, it delivers
        assert rc[1].apply_sync(pow, 2, 3) == 8
        rc.close()
    finally:
        subprocess.run(hpcpar_cmd("stop", "--profile", profile), timeout=90)
