"""Fault tests behind issue #15's promises, scaled to run in seconds (real local clusters)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from cluster_helpers import start_cluster

import hpcpar


def square_slowly(x: int) -> tuple[int, int]:
    import os
    import time

    time.sleep(0.01)
    return x * x, os.getpid()


@pytest.fixture()
def six_engines():
    cluster, rc = start_cluster(6, f"faults-{os.getpid()}")
    yield cluster, rc
    rc.close()
    cluster.stop_cluster_sync()


def test_load_balanced_tasks_survive_engines_sigkilled_mid_run(six_engines):
    """1,000 load-balanced tasks with retries=1 while 4 of 6 engines are SIGKILLed: every task
    delivers its own right result (0 lost, 0 wrong)."""
    _, rc = six_engines
    pids = dict(zip(rc.ids, rc[:].apply_sync(os.getpid)))
    view = rc.load_balanced_view()
    with view.temp_flags(retries=1):
        ars = [view.apply_async(square_slowly, i) for i in range(1000)]
    deadline = time.monotonic() + 30
    while sum(ar.ready() for ar in ars) < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    victims = list(pids.values())[:4]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    results = [ar.get(timeout=120) for ar in ars]
    assert [r[0] for r in results] == [i * i for i in range(1000)]
    late = [r[1] for r in results[-100:]]
    assert not set(late) & set(victims), "tasks at the end ran on killed engines"


CLIENT = """
import json, os, sys, hpcpar
rc = hpcpar.Client(profile=sys.argv[1], timeout=30)
from test_faults import square_slowly
view = rc.load_balanced_view()
ars = [view.apply_async(square_slowly, i) for i in range(1000)]
rc.queue_status()  # answered after the controller read every request before it (same socket)
with open(sys.argv[2], "w") as f:
    json.dump([ar.msg_ids[0] for ar in ars], f)
os.kill(os.getpid(), 9)
"""


def test_client_sigkilled_with_tasks_in_flight(six_engines, tmp_path):
    """A client SIGKILLed with 1,000 tasks in flight: another client is served meanwhile, and every
    one of the dead client's results is retrievable by id."""
    cluster, rc = six_engines
    ids_file = tmp_path / "ids.json"
    out = subprocess.run([sys.executable, "-c", CLIENT, cluster.profile_dir.name, str(ids_file)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr
    msg_ids = json.loads(ids_file.read_text())
    assert len(msg_ids) == 1000
    assert rc[:].apply_sync(pow, 2, 2) == [4] * 6  # the others are served
    results = rc.get_result(msg_ids, block=False).get(timeout=120)
    assert [r[0] for r in results] == [i * i for i in range(1000)]
    with hpcpar.Client(profile=cluster.profile_dir.name, timeout=30) as other:
        assert other.get_result(msg_ids[-1], block=False).get(timeout=30)[0] == 999 * 999
