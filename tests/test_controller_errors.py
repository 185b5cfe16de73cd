"""A bug in the controller while it handles a client's request reaches that client at once.

The controller keeps serving after an error in one message (controller/app.py ``_drain``); the
client whose request hit it gets the reason and where to report it, not a time-out. The
controller runs through tests/faulty_controller.py, which raises while handling the message
types it is given; the engine and client are real processes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cluster_helpers import FAST_HEARTBEAT, hpcpar_cmd

import hpcpar
from hpcpar.cli import ISSUES_URL


def _wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


@pytest.mark.timeout(120)
def test_a_request_the_controller_fails_on_fails_at_once_with_the_reason(tmp_path: Path):
    from hpcpar.paths import ProfileDir

    pd = ProfileDir(tmp_path / "profile")
    procs: list[subprocess.Popen] = []
    with open(tmp_path / "controller.log", "wb") as out:
        procs.append(subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("faulty_controller.py")), "db_query_request,execute_request",
             "controller", "--profile-dir", str(pd.path), *FAST_HEARTBEAT], stdout=out, stderr=subprocess.STDOUT))
    try:
        _wait_for(pd.engine_file().exists, 60, "the controller's connection file")
        with open(tmp_path / "engine.log", "wb") as out:
            procs.append(subprocess.Popen(hpcpar_cmd("engine", "--file", str(pd.engine_file())),
                                          stdout=out, stderr=subprocess.STDOUT))
        with hpcpar.Client(str(pd.client_file()), timeout=30) as rc:
            rc.wait_for_engines(1, timeout=60, interactive=False)
            # a request to the controller itself: raised by the call, long before its 30 s time-out
            t0 = time.monotonic()
            with pytest.raises(RuntimeError, match="the controller failed handling request") as info:
                rc.db_query({"msg_id": {"$ne": ""}})
            assert time.monotonic() - t0 < 10
            assert "injected fault handling db_query_request" in str(info.value) and ISSUES_URL in str(info.value)
            # a task: its AsyncResult fails as a RemoteError that names the reason
            ar = rc[:].execute("x = 1", block=False)
            with pytest.raises(hpcpar.RemoteError) as task_error:
                ar.get(timeout=10)
            assert task_error.value.ename == "ControllerError", task_error.value
            assert "injected fault handling execute_request" in str(task_error.value)
            # the controller served on: other requests work
            assert rc[:].apply_sync(lambda: 42) == [42]
        assert "error handling a message; dropped" in (tmp_path / "controller.log").read_text()
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
