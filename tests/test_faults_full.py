"""Issue #15's fault figures at full size, each on a real local cluster (ci/test.sh's soak lane).

The measuring code is the benchmarks' own (benchmarks/faults.py, security.py, crash_recovery.py
return their figures); these tests assert them. tests/test_faults.py, test_security.py and
test_crash_recovery.py run the same paths smaller in the main suite. The stalled client
(200 MB of results to a client that never reads) is already full size there
(test_security.py::test_stalled_client_does_not_grow_the_controller) and is not repeated here.
No timing is asserted: only what was lost, wrong, run or kept.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from cluster_helpers import start_cluster

BENCHMARKS = str(Path(__file__).resolve().parent.parent / "benchmarks")
if BENCHMARKS not in sys.path:
    sys.path.append(BENCHMARKS)  # last: its module names (run, worker...) shadow nothing

import crash_recovery  # noqa: E402 - from benchmarks/, above
import faults  # noqa: E402
import security as security_bench  # noqa: E402

MB = 1 << 20


@pytest.fixture(scope="module", autouse=True)
def benchmarks_importable():
    """Engines and the killed client unpickle the benchmarks' task functions by reference."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [old, BENCHMARKS]))
    yield
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def fourteen_engines(benchmarks_importable):
    """One 14-engine cluster for the module: the client test first, then the test that kills 10."""
    cluster, rc = start_cluster(14, f"faults-full-{os.getpid()}")
    yield cluster, rc
    rc.close()
    cluster.stop_cluster_sync()


@pytest.mark.timeout(600)
def test_client_sigkilled_with_1000_tasks_in_flight(fourteen_engines):
    """Others are served meanwhile; every one of the dead client's 1,000 results is retrievable
    by id, and right."""
    cluster, rc = fourteen_engines
    f = faults.client_run(cluster, rc, 1000)
    print(f)
    assert f["exit"] == -signal.SIGKILL, f["stderr"]
    assert f["in_flight"] == 1000
    assert f["served"]
    assert f["retrievable_right"] == 1000, f


@pytest.mark.timeout(900)
def test_10000_tasks_survive_10_of_14_engines_sigkilled(fourteen_engines):
    """10,000 load-balanced tasks with retries=1 while 10 of 14 engines are SIGKILLed: 0 lost,
    0 wrong; a task whose retry also met a dying engine fails with an error the user sees."""
    _, rc = fourteen_engines
    assert len(rc.ids) == 14
    # 10 ms per task: the run outlasts its own submission, so the kill comes mid-run (with no work
    # per task, a slow submission on a loaded machine let the engines finish nearly everything first).
    f = faults.engines_run(rc, 10_000, 10, delay=0.01)
    print(f)
    assert f["killed"] == 10
    assert f["done_at_kill"] < 9_000, f  # the last tenth was still to run when the engines died
    assert f["lost"] == 0, f
    assert f["wrong"] == 0, f
    # A failure reaches the user as an error naming the engine's death, never as a wrong value.
    assert set(f["failures"]) <= {"EngineError"}, f
    assert f["late_on_killed"] == 0, f


@pytest.mark.timeout(600)
def test_controller_sigkilled_mid_run_then_restore(tmp_path):
    """2,000 load-balanced tasks, the controller SIGKILLed once half have returned, then
    `hpcpar start --restore`: 0 failed, 0 lost, 0 wrong (each AsyncResult gives one value)."""
    f = crash_recovery.run(2000, 4, 0.5, 0.005, 300.0, profile=f"crash-full-{os.getpid()}")
    print(f)
    assert f["done_at_kill"] < 2000, f  # the crash came mid-run
    assert (f["failed"], f["lost"], f["wrong"], f["never_ran"]) == (0, 0, 0, 0), f


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", ["curve", "hmac"])
def test_100000_bad_frames_and_a_1gb_frame_at_every_port(mode):
    """100,000 malformed or unauthenticated messages (random bytes, bad signatures, truncated
    multipart, replays of a signed request) and one 1 GB frame at the client and engine ports.
    curve: no handshake completes, nothing is delivered; hmac (a peer that read the login token off
    the wire, so its frames reach signature checks): nothing runs. Either way the one legitimate
    request ran once, the cluster serves afterwards and the controller's RSS is back within 20 MB."""
    f = security_bench.flood_run(mode, 100_000, 1.0, login=True)
    print({k: (v >> 20 if k.startswith("rss") else v) for k, v in f.items()})
    if mode == "curve":
        assert f["handshakes"] == 0, f
    else:
        # The frames did reach the controller, the 1 GB one too (it grew while reading it).
        assert f["handshakes"] == 2 and f["sent"] == 200_002 and f["flushed"], f
        assert f["rss_peak"] - f["rss_before"] > 500 * MB, f
    assert f["executions"] == 1, f  # the legitimate request; no replay, no forgery ran
    assert f["served"], f
    grown = f["rss_after"] - f["rss_before"]
    assert grown <= 20 * MB, f"controller RSS {grown >> 20} MB above its start after the flood: {f}"
