"""Load-balanced scheduling: schemes, dependencies, retries, rerouting, stopping work."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from cluster_helpers import start_cluster

import hpcpar
from hpcpar import Dependency


def engine_pid():
    import os

    return os.getpid()


def sleep_then(delay, value=None):
    import time

    time.sleep(delay)
    return value


def count_attempt_then_fail_until(path, succeed_on):
    """Appends one line per attempt (in a file, so it survives engine death)."""
    with open(path, "a") as f:
        f.write("x\n")
    n = len(open(path).read().splitlines())
    if n < succeed_on:
        raise RuntimeError(f"attempt {n} fails on purpose")
    return n


@pytest.mark.parametrize("scheme", ["leastload", "lru", "twobin", "weighted", "plainrandom"])
def test_every_scheme_runs_tasks(scheme, hpcpar_dir):
    cluster, rc = start_cluster(2, f"scheme-{scheme}", controller_args_extra=["--scheme", scheme])
    try:
        lb = rc.load_balanced_view()
        assert lb.map_sync(lambda x: x * 2, range(20)) == [x * 2 for x in range(20)]
        pids = lb.map_sync(sleep_then, [0.1] * 8, [None] * 8)
        assert pids == [None] * 8
        used = {ar.engine_id for ar in [lb.apply_async(engine_pid) for _ in range(12)] if ar.get(timeout=10)}
        if scheme in ("leastload", "lru"):
            assert used == set(rc.ids)
    finally:
        cluster.stop_cluster_sync()


def test_after_waits_for_its_dependency(rc):
    lb = rc.load_balanced_view()
    first = lb.apply_async(sleep_then, 0.5, "first")
    second = lb.apply_async(sleep_then, 0, "second") if False else None
    with lb.temp_flags(after=first):
        second = lb.apply_async(sleep_then, 0, "second")
    assert second.get(timeout=10) == "second"
    assert second.metadata.started >= first.metadata.completed


def test_follow_runs_where_the_dependency_ran(rc):
    lb = rc.load_balanced_view()
    anchors = [lb.apply_async(engine_pid) for _ in range(4)]
    for anchor in anchors:
        anchor.get(timeout=10)
        with lb.temp_flags(follow=anchor):
            followers = [lb.apply_async(engine_pid) for _ in range(3)]
        assert {f.get(timeout=10) for f in followers} == {anchor.get()}
        assert {f.engine_id for f in followers} == {anchor.engine_id}


def test_dependency_timeout(rc):
    lb = rc.load_balanced_view()
    slow = lb.apply_async(sleep_then, 3)
    with lb.temp_flags(after=slow, timeout=0.3):
        waiting = lb.apply_async(engine_pid)
    start = time.monotonic()
    with pytest.raises(hpcpar.error.DependencyTimeout) as info:
        waiting.get(timeout=10)
    assert isinstance(info.value, hpcpar.TaskTimeout)
    assert time.monotonic() - start < 2.5
    slow.get(timeout=10)


def test_impossible_dependencies_fail_instead_of_waiting(rc):
    lb = rc.load_balanced_view()
    failed = lb.apply_async(lambda: 1 / 0)
    with pytest.raises(hpcpar.RemoteError):
        failed.get(timeout=10)
    with lb.temp_flags(after=Dependency(failed, success=True, failure=False)):
        doomed = lb.apply_async(engine_pid)
    with pytest.raises(hpcpar.ImpossibleDependency, match="can no longer be met"):
        doomed.get(timeout=10)
    # ...but a dependency that accepts failure runs.
    with lb.temp_flags(after=Dependency(failed, success=False, failure=True)):
        assert lb.apply_async(lambda: "ran").get(timeout=10) == "ran"
    # follow two tasks that ran on different engines: no single engine satisfies it.
    a = rc.load_balanced_view(targets=[0]).apply_async(engine_pid)
    b = rc.load_balanced_view(targets=[1]).apply_async(engine_pid)
    a.get(timeout=10), b.get(timeout=10)
    with lb.temp_flags(follow=Dependency([a, b], all=True)):
        nowhere = lb.apply_async(engine_pid)
    with pytest.raises(hpcpar.ImpossibleDependency):
        nowhere.get(timeout=10)
    with lb.temp_flags(follow=Dependency([a, b], all=False)):
        assert lb.apply_async(engine_pid).get(timeout=10) in {a.get(), b.get()}
    with lb.temp_flags(after=["no-such-msg-id"]):
        with pytest.raises(hpcpar.ImpossibleDependency):
            lb.apply_async(engine_pid).get(timeout=10)


def test_unmet_dependency_reroutes_and_never_returns_to_that_engine(rc):
    lb = rc.load_balanced_view()
    wanted = rc[2].apply_sync(engine_pid)

    @hpcpar.depend(lambda pid: __import__("os").getpid() == pid, wanted)
    def only_on_wanted():
        import os
        return os.getpid()

    results = [lb.apply_async(only_on_wanted) for _ in range(6)]
    assert [r.get(timeout=20) for r in results] == [wanted] * 6

    @hpcpar.require("module_that_does_not_exist_anywhere")
    def needs_missing():
        return 1

    with pytest.raises(hpcpar.ImpossibleDependency, match="UnmetDependency on engines"):
        lb.apply_async(needs_missing).get(timeout=20)

    @hpcpar.require("json")
    def needs_json():
        return json.dumps([1])  # noqa: F821 - imported on the engine by @require

    assert lb.apply_sync(needs_json) == "[1]"


def test_retries_count_attempts(rc, tmp_path):
    lb = rc.load_balanced_view()
    ok_file, fail_file = tmp_path / "ok", tmp_path / "fail"
    with lb.temp_flags(retries=2):
        assert lb.apply_sync(count_attempt_then_fail_until, str(ok_file), 3) == 3
    assert len(ok_file.read_text().splitlines()) == 3
    with lb.temp_flags(retries=1):
        with pytest.raises(hpcpar.RemoteError, match="attempt 2 fails"):
            lb.apply_sync(count_attempt_then_fail_until, str(fail_file), 5)
    assert len(fail_file.read_text().splitlines()) == 2
    with pytest.raises(ValueError):
        lb.set_flags(retries=-1)


def test_engine_killed_mid_task_is_retried_elsewhere(private_cluster, tmp_path):
    cluster, rc = private_cluster
    marker = tmp_path / "attempts"

    def record_and_sleep(path, delay):
        import os
        import time
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(delay if len(open(path).read().splitlines()) == 1 else 0)
        return os.getpid()

    lb = rc.load_balanced_view()
    with lb.temp_flags(retries=1):
        ar = lb.apply_async(record_and_sleep, str(marker), 30)
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    first_pid = int(marker.read_text().split()[0])
    os.kill(first_pid, signal.SIGKILL)
    result = ar.get(timeout=30)
    attempts = [int(x) for x in marker.read_text().split()]
    assert len(attempts) == 2 and attempts[0] == first_pid and result == attempts[1] != first_pid
    # without retries the same loss is an EngineError
    marker2 = tmp_path / "attempts2"
    ar2 = lb.apply_async(record_and_sleep, str(marker2), 30)
    deadline = time.monotonic() + 10
    while not marker2.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(int(marker2.read_text().split()[0]), signal.SIGKILL)
    with pytest.raises(hpcpar.EngineError):
        ar2.get(timeout=30)


def test_abort_queued_load_balanced_tasks(rc, tmp_path):
    lb = rc.load_balanced_view()
    busy = [lb.apply_async(sleep_then, 1.0) for _ in range(4)]
    marker = tmp_path / "ran"
    queued = [lb.apply_async(lambda p: open(p, "a").write("x"), str(marker)) for _ in range(5)]
    assert rc.queue_status()["unassigned"] >= 5
    lb.abort(queued)
    for ar in queued:
        with pytest.raises(hpcpar.TaskAborted):
            ar.get(timeout=10)
    for ar in busy:
        ar.get(timeout=10)
    assert not marker.exists()


def test_interrupt_a_running_task(rc):
    lb = rc.load_balanced_view()
    ar = lb.apply_async(time.sleep, 60)
    time.sleep(0.5)
    start = time.monotonic()
    ar.abort(interrupt=True)
    with pytest.raises(hpcpar.RemoteError) as info:
        ar.get(timeout=15)
    assert info.value.ename == "KeyboardInterrupt"
    assert time.monotonic() - start < 5
    assert rc[ar.engine_id].apply_sync(lambda: "still serving") == "still serving"
    # send_signal interrupts whatever runs on an engine
    ar2 = rc[1].apply_async(time.sleep, 60)
    time.sleep(0.5)
    rc.send_signal(signal.SIGINT, targets=[1], block=True)
    with pytest.raises(hpcpar.RemoteError, match="KeyboardInterrupt"):
        ar2.get(timeout=15)


def test_imap_and_executor_with_flags(rc):
    lb = rc.load_balanced_view()
    with lb.temp_flags(retries=1):
        assert list(lb.imap(abs, [-1, -2, -3])) == [1, 2, 3]
    assert Path  # keep import used


def test_dependencies_older_than_the_controller_remembers_are_looked_up(hpcpar_dir):
    """Finished tasks fall out of the controller's memory (bounded); a dependency on
    one is resolved from the task database instead of being called impossible."""
    cluster, rc = start_cluster(2, "dep-memory", controller_args_extra=["--dependency-memory", "3"])
    try:
        lb = rc.load_balanced_view()
        old = lb.apply_async(engine_pid)
        old.get(timeout=10)
        failed = lb.apply_async(lambda: 1 / 0)
        with pytest.raises(hpcpar.RemoteError):
            failed.get(timeout=10)
        lb.map_sync(abs, range(10), chunksize=1)  # ten newer tasks push both out of memory
        with lb.temp_flags(after=old):
            assert lb.apply_async(lambda: "after old").get(timeout=10) == "after old"
        with lb.temp_flags(follow=old):
            assert lb.apply_async(engine_pid).get(timeout=10) == old.get()
        with lb.temp_flags(after=Dependency(failed, success=True)):
            with pytest.raises(hpcpar.ImpossibleDependency):
                lb.apply_async(engine_pid).get(timeout=10)
        with lb.temp_flags(after=["never-submitted"]):
            with pytest.raises(hpcpar.ImpossibleDependency):
                lb.apply_async(engine_pid).get(timeout=10)
    finally:
        cluster.stop_cluster_sync()
