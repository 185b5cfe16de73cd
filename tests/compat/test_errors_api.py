"""ipyparallel's exceptions: failures hpcpar reports itself reach the user as RemoteError (with
ipyparallel's ``ename``) that are also the specific class; CompositeError renders every error."""

from __future__ import annotations

import os
import signal
import sys
import time

import cloudpickle
import pytest

import hpcpar as ipp
from hpcpar import error

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import this module


def fail(x):
    raise ValueError(f"bad {x}")


def test_engine_death_is_a_remote_error_named_engine_error(private_cluster):
    _, rc = private_cluster
    victim = rc.ids[0]
    pid = rc[victim].apply_sync(os.getpid)
    ar = rc[victim].apply_async(time.sleep, 30)
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ipp.RemoteError) as info:  # ipyparallel's idiom
        ar.get(timeout=60)
    assert info.value.ename == "EngineError"
    assert isinstance(info.value, ipp.EngineError)
    assert info.value.engine_info.get("engine_id") == victim


def test_impossible_dependency_is_a_remote_error(rc):
    lb = rc.load_balanced_view()
    failed = lb.apply_async(fail, 1)
    with pytest.raises(ipp.RemoteError):
        failed.get(timeout=30)
    with lb.temp_flags(after=ipp.Dependency(failed, success=True, failure=False)):
        doomed = lb.apply_async(abs, -1)
    with pytest.raises(ipp.RemoteError) as info:
        doomed.get(timeout=30)
    assert info.value.ename == "ImpossibleDependency"
    assert isinstance(info.value, ipp.ImpossibleDependency)


def test_dependency_on_an_unknown_task_is_an_invalid_dependency(rc):
    lb = rc.load_balanced_view()
    with lb.temp_flags(after=["no-such-msg-id"]):
        ar = lb.apply_async(abs, -1)
    with pytest.raises(ipp.RemoteError) as info:
        ar.get(timeout=30)
    assert info.value.ename == "InvalidDependency"
    assert isinstance(info.value, error.InvalidDependency)
    assert isinstance(info.value, ipp.ImpossibleDependency)  # ipyparallel's hierarchy
    assert "no record" in info.value.evalue


def test_task_timeout_is_a_remote_error_and_a_task_timeout(rc):
    lb = rc.load_balanced_view()
    slow = rc[0].apply_async(time.sleep, 3)
    with lb.temp_flags(after=slow, timeout=0.3):
        ar = lb.apply_async(abs, -1)
    with pytest.raises(ipp.RemoteError) as info:
        ar.get(timeout=30)
    assert info.value.ename == "DependencyTimeout"
    assert isinstance(info.value, ipp.TaskTimeout)
    slow.get(timeout=30)


def test_aborted_task_is_a_remote_error_named_task_aborted(rc):
    busy = rc[1].apply_async(time.sleep, 2)
    queued = rc[1].apply_async(abs, -1)
    rc.abort(queued, block=True)
    with pytest.raises(ipp.RemoteError) as info:
        queued.get(timeout=30)
    assert info.value.ename == "TaskAborted" and isinstance(info.value, ipp.TaskAborted)
    busy.get(timeout=30)


def test_get_result_of_an_unknown_id_is_a_remote_error_named_key_error(rc):
    with pytest.raises(ipp.RemoteError) as info:
        rc.get_result("no-such-task", block=False).get(timeout=30)
    assert info.value.ename == "KeyError" and isinstance(info.value, KeyError)
    assert "no-such-task" in info.value.evalue


def test_result_status_of_an_unknown_id_is_a_remote_error(rc):
    with pytest.raises(ipp.RemoteError) as info:
        rc.result_status(["no-such-task"])
    assert info.value.ename == "KeyError"


def test_user_exception_named_like_hpcpar_error_stays_a_plain_remote_error(rc):
    def raise_engine_error():
        class EngineError(Exception):
            pass

        raise EngineError("mine")

    with pytest.raises(ipp.RemoteError) as info:
        rc[0].apply_sync(raise_engine_error)
    assert info.value.ename == "EngineError"
    assert not isinstance(info.value, ipp.EngineError)


def test_composite_error_renders_every_error_up_to_tb_limit(rc):
    lb = rc.load_balanced_view()
    with pytest.raises(ipp.CompositeError) as info:
        lb.map_sync(fail, range(6), chunksize=1)
    err = info.value
    assert len(err.elist) == 6 and err.tb_limit == 4
    lines = err.render_traceback()
    text = "\n".join(lines)
    assert text.count("ValueError: bad") == 4
    assert lines[-1] == "... 2 more exceptions ..."
    heads = [line for line in lines if line.startswith("[") and line.endswith(":apply]: ")]
    assert len(heads) == 4
    assert "... 2 more exceptions ..." in str(err)
    one = err.render_traceback(excid=5)
    assert "ValueError: bad 5" in "\n".join(one)
    with pytest.raises(IndexError, match="holds 6"):
        err.render_traceback(excid=6)
    with pytest.raises(ipp.RemoteError, match="bad 2"):
        err.raise_exception(2)


def test_composite_error_renders_all_when_under_tb_limit(rc):
    with pytest.raises(ipp.CompositeError) as info:
        rc[:].apply_sync(fail, "x")
    lines = info.value.render_traceback()
    assert "\n".join(lines).count("ValueError: bad x") == len(rc.ids)
    assert not any("more exceptions" in line for line in lines)
    assert lines == info.value._render_traceback_()
