"""Nothing lost at a controller crash: SIGKILL the controller, `hpcpar start --restore`.

Results the client received stay retrievable, tasks running on engines deliver their
results, tasks queued in the dead controller run (once) after the restore.
"""

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


def _start(profile: str, n: int) -> dict:
    out = subprocess.run(hpcpar_cmd("start", "--profile", profile, "-n", str(n), "--daemonize", "--wait"),
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    return json.loads(hpcpar.paths.ProfileDir.for_profile(profile).client_file().read_text())


def _kill_and_restore(info: dict, profile: str) -> None:
    os.kill(info["controller_pid"], signal.SIGKILL)
    time.sleep(0.5)
    out = subprocess.run(hpcpar_cmd("start", "--profile", profile, "--restore"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def _slow(x, delay):
    import time

    time.sleep(delay)
    return x * 10


def test_controller_sigkill_loses_nothing(tmp_path):
    profile = f"crash-{os.getpid()}"
    info = _start(profile, 2)
    try:
        rc = hpcpar.Client(profile=profile, timeout=30)
        rc.wait_for_engines(2, timeout=60, interactive=False)
        view = rc.load_balanced_view()
        # Two tasks running on the engines at the crash, six queued in the controller (hwm 1).
        running = [view.apply_async(_slow, i, 4.0) for i in range(2)]
        time.sleep(1.0)
        queued = [view.apply_async(_slow, 100 + i, 0.01) for i in range(6)]
        direct = rc[0].apply_async(_slow, 7, 0.01)  # behind a running task on engine 0
        broadcast = rc[:].apply_async(_slow, 5, 0.01)  # one reply from each engine
        time.sleep(0.5)  # the database has these records (the hub commits 20 times a second)
        # Results the client receives right before the crash: their records may not be on disk.
        quick_ids = []
        for i in range(20):
            ar = rc[i % 2].apply_async(pow, i, 2)
            assert ar.get(timeout=30) == i * i
            quick_ids.append(ar.msg_ids[0])
        _kill_and_restore(info, profile)

        # The same client: the running and queued tasks deliver their results.
        assert [ar.get(timeout=120) for ar in running] == [0, 10]
        assert [ar.get(timeout=120) for ar in queued] == [(100 + i) * 10 for i in range(6)]
        assert direct.get(timeout=120) == 70
        assert broadcast.get(timeout=120) == [50, 50]
        # A new client fetches every result the first one received, from the restored hub.
        other = hpcpar.Client(profile=profile, timeout=30)
        assert other.get_result(quick_ids, block=False).get(timeout=60) == [i * i for i in range(20)]
        ids = [ar.msg_ids[0] for ar in running + queued]
        assert other.get_result(ids, block=False).get(timeout=60) == [0, 10] + [(100 + i) * 10 for i in range(6)]
        # Each task ran once: one attempt recorded per load-balanced task.
        records = other.db_query({"msg_id": {"$in": ids}}, ["msg_id", "status", "engine_id"])
        assert sorted(r["msg_id"] for r in records) == sorted(ids)
        assert all(r["status"] == "ok" for r in records), records
        # The cluster keeps serving.
        assert rc[:].apply_sync(pow, 3, 2) == [9, 9]
        other.close()
        rc.close()
    finally:
        subprocess.run(hpcpar_cmd("stop", "--profile", profile), timeout=90)


def _farm_task(i, path):
    import time

    time.sleep(0.005)
    with open(path, "a") as f:
        f.write(f"{i}\n")
    return i * 3


def test_farm_survives_controller_sigkill_mid_run(tmp_path):
    """500 load-balanced tasks, the controller SIGKILLed once half have returned, then restored:
    every task's result reaches the same client, none fails, each ran (benchmarks/crash_recovery.py
    runs 2,000)."""
    profile = f"crashfarm-{os.getpid()}"
    runs = tmp_path / "runs.txt"
    info = _start(profile, 4)
    try:
        rc = hpcpar.Client(profile=profile, timeout=30)
        rc.wait_for_engines(4, timeout=60, interactive=False)
        view = rc.load_balanced_view()
        ars = [view.apply_async(_farm_task, i, str(runs)) for i in range(500)]
        deadline = time.monotonic() + 120
        while sum(ar.ready() for ar in ars) < 250 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not all(ar.ready() for ar in ars), "the farm finished before the controller was killed"
        _kill_and_restore(info, profile)
        results = [ar.get(timeout=120) for ar in ars]  # an EngineError or a timeout fails the test
        assert results == [i * 3 for i in range(500)]
        ran = {int(x) for x in runs.read_text().split()}
        assert ran == set(range(500))
        rc.close()
    finally:
        subprocess.run(hpcpar_cmd("stop", "--profile", profile), timeout=90)


def test_requests_the_dead_controller_never_recorded_are_sent_again(tmp_path):
    """The controller SIGKILLed right after a burst of submissions (the hub records in batches,
    so some requests are nowhere on disk): the client's resync sends those again, every task runs."""
    profile = f"crashburst-{os.getpid()}"
    runs = tmp_path / "runs.txt"
    info = _start(profile, 2)
    try:
        rc = hpcpar.Client(profile=profile, timeout=30)
        rc.wait_for_engines(2, timeout=60, interactive=False)
        view = rc.load_balanced_view()
        ars = [view.apply_async(_farm_task, i, str(runs)) for i in range(300)]
        _kill_and_restore(info, profile)
        # The client's engine list may still be the old one (or empty, if its resync came before the
        # engines): a request for engines not re-attached yet waits for them instead of failing.
        deadline = time.monotonic() + 60
        while sorted(rc.ids) != [0, 1] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rc[[0, 1]].apply_sync(pow, 2, 3) == [8, 8]
        assert [ar.get(timeout=120) for ar in ars] == [i * 3 for i in range(300)]
        assert {int(x) for x in runs.read_text().split()} == set(range(300))
        rc.close()
    finally:
        subprocess.run(hpcpar_cmd("stop", "--profile", profile), timeout=90)


def test_engines_reattach_when_the_crash_came_before_their_listing(tmp_path):
    """SIGKILL before the controller wrote down its engines (simulated by removing the listing):
    the engines say they had ids, the restored controller gives them back their work, and a
    direct request for them made before they are back waits for them."""
    profile = f"crashlist-{os.getpid()}"
    info = _start(profile, 2)
    try:
        rc = hpcpar.Client(profile=profile, timeout=30)
        rc.wait_for_engines(2, timeout=60, interactive=False)
        running = [rc[i].apply_async(_slow, i, 3.0) for i in (0, 1)]
        time.sleep(1.0)  # dispatched and recorded
        run = hpcpar.paths.ProfileDir.for_profile(profile).run
        listing = sorted(run.glob("engines*"))
        assert listing, f"no engine listing in {run}: {sorted(run.iterdir())}"
        os.kill(info["controller_pid"], signal.SIGKILL)
        for path in listing:
            path.unlink()
        out = subprocess.run(hpcpar_cmd("start", "--profile", profile, "--restore"),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        deadline = time.monotonic() + 60
        while sorted(rc.ids) != [0, 1] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(rc.ids) == [0, 1]  # the same ids, though nothing listed them
        assert rc[[0, 1]].apply_sync(pow, 2, 5) == [32, 32]
        assert [ar.get(timeout=120) for ar in running] == [0, 10]
        rc.close()
    finally:
        subprocess.run(hpcpar_cmd("stop", "--profile", profile), timeout=90)
