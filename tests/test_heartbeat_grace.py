"""Heartbeats that arrive while the controller verifies a huge frame are not missed.

Verifying a frame (HMAC over its payload) keeps the controller's loop busy; heartbeats of
idle engines wait unread in the engine socket meanwhile. The controller must not declare
those engines lost for the time it did not read them (controller/app.py, ``_was_busy``).

How long a real frame takes to verify depends on the machine (about 0.45 s for 600 MB here
when idle), so the controller runs through tests/slow_verify.py, which adds a fixed few
seconds to the verification of any frame above 64 MB: the loop is then busy for three
heartbeat timeouts, on any machine. Without the grace both idle engines are declared lost
at once (and the task fails with EngineError); with it, nothing is lost. The controller,
engines and client are real processes started as docs/user-guide.md starts them by hand.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cluster_helpers import FAST_HEARTBEAT, hpcpar_cmd

import hpcpar

TIMEOUT = float(FAST_HEARTBEAT[3])  # the suite's heartbeat timeout (2 s, every 0.25 s)
STALL = 3 * TIMEOUT  # seconds the verification of the big request takes longer
MB = 200


def _wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


def test_idle_engines_survive_a_controller_busy_verifying_a_huge_frame(tmp_path: Path):
    from hpcpar.paths import ProfileDir

    pd = ProfileDir.for_profile(f"grace-{os.getpid()}")
    log = tmp_path / "controller.log"
    procs: list[subprocess.Popen] = []
    with open(log, "wb") as out:
        procs.append(subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("slow_verify.py")), str(STALL),
             "controller", "--profile-dir", str(pd.path), "--transport", "hmac", *FAST_HEARTBEAT],
            stdout=out, stderr=subprocess.STDOUT))
    try:
        _wait_for(pd.engine_file().exists, 60, "the controller's connection file")
        for i in range(2):
            with open(tmp_path / f"engine{i}.log", "wb") as out:
                procs.append(subprocess.Popen(hpcpar_cmd("engine", "--file", str(pd.engine_file())),
                                              stdout=out, stderr=subprocess.STDOUT))
        with hpcpar.Client(str(pd.client_file()), timeout=60) as rc:
            rc.wait_for_engines(2, timeout=60, interactive=False)
            pids = dict(zip(rc.ids, rc[:].apply_sync(os.getpid)))
            # Load-balanced: no fan-out allowance applies, only the grace for a busy loop.
            # Both engines are idle while the controller verifies the 200 MB request.
            blob = b"z" * (MB << 20)
            got = rc.load_balanced_view().apply_async(len, blob)
            del blob
            assert got.get(timeout=90) == MB << 20
            text = log.read_text()
            busy = [float(line.split("busy for ")[1].split(" s")[0]) for line in text.splitlines()
                    if "controller was busy for" in line]
            assert busy and max(busy) >= STALL / 2, f"the loop was never busy for the stall:\n{text}"
            assert " is lost" not in text, text
            assert sorted(rc.ids) == sorted(pids)
            assert dict(zip(rc.ids, rc[:].apply_sync(os.getpid))) == pids

            # The grace is bounded: an engine that really died is still declared lost.
            victim = max(pids)
            os.kill(pids[victim], signal.SIGKILL)
            _wait_for(lambda: victim not in rc.ids, 30, f"engine {victim} to be declared lost")
            assert f"engine {victim} " in log.read_text() and " is lost" in log.read_text()
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM if p is procs[0] else signal.SIGKILL)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
