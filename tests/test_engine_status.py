"""Engines report what they run: ``rc.queue_status(verbose=True)[id]["status"]`` and
``hpcpar status`` show per engine the task, for how long and the innermost call, sampled
from the engine's main thread even while it is blocked in C (an MPI collective)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import warnings

import pytest
from cluster_helpers import hpcpar_cmd
from test_mpi import mpi, require_mpi  # noqa: F401 - the module-scoped 4-rank MPI cluster

from hpcpar.engine.status import describe_activity, innermost_call
from hpcpar.mpi import MPISubsetWarning


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_running_task_is_reported_with_its_innermost_call(rc) -> None:
    ar = rc[1].execute("import time\ndef inner():\n    time.sleep(6)\ninner()", block=False)

    def busy():
        st = rc.queue_status(verbose=True)[1].get("status") or {}
        return st if st.get("state") == "busy" and st.get("running_for", 0) >= 1 else None

    st = wait_for(busy, what="engine 1 busy for a second")
    [msg_id] = ar.msg_ids
    assert st["task"] == msg_id and st["callee"] == "time.sleep"
    assert st["call"].endswith(":3 inner")  # line 3 of the cell, in function inner
    assert st["pid"] > 0
    assert st["rss"] > 1 << 20 and st["cpu"] >= 0 and st["host"] and st["mpi_rank"] is None
    idle = rc.queue_status(verbose=True)[0]["status"]
    assert idle["state"] == "idle" and idle["task"] is None and idle["call"] is None
    out = subprocess.run(hpcpar_cmd("status", "--profile", "shared", "--json"), capture_output=True, text=True,
                         timeout=60)
    doc = json.loads(out.stdout)
    assert "engine 1 in time.sleep for" in doc["activity"], doc["activity"]
    assert {e["id"]: e["status"]["state"] for e in doc["engines"]}[1] == "busy"
    ar.get(timeout=30)
    assert wait_for(lambda: rc.queue_status(verbose=True)[1]["status"]["state"] == "idle", what="idle again")


def test_status_pid_is_the_engines(rc) -> None:
    pids = dict(zip(rc.ids, rc[:].apply_sync(os.getpid)))
    statuses = wait_for(lambda: (s := rc.queue_status(verbose=True)) and all(s[i].get("status") for i in rc.ids)
                        and s, what="every engine's status")
    assert {i: statuses[i]["status"]["pid"] for i in rc.ids} == pids


@pytest.mark.timeout(120)
def test_a_collective_hung_on_a_subset_is_shown_per_rank(mpi) -> None:  # noqa: F811
    cluster, rc = mpi
    profile = cluster.profile_dir.name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MPISubsetWarning)
        stuck = rc[:2].execute("comm.Barrier()", block=False)

    def shown():
        out = subprocess.run(hpcpar_cmd("status", "--profile", profile), capture_output=True, text=True, timeout=60)
        line = next((x for x in out.stdout.splitlines() if x.startswith("NOW: ")), "")
        return line if "rank 0-1 in comm.Barrier for" in line and line.endswith("rank 2-3 idle") else None

    line = wait_for(shown, timeout=60, what="hpcpar status showing the hung Barrier")
    assert line.startswith("NOW: rank 0-1 in comm.Barrier for ")
    st = rc.queue_status(verbose=True)
    assert [st[i]["status"]["mpi_rank"] for i in range(4)] == [0, 1, 2, 3]
    assert {st[i]["status"]["task"] for i in (0, 1)} == set(stuck.msg_ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MPISubsetWarning)
        rc[2:].execute("comm.Barrier()", block=True)  # the missing ranks join: all four return
    stuck.get(timeout=30)


def test_describe_activity_groups_ranks_and_engines() -> None:
    statuses = {
        0: {"state": "busy", "callee": "comm.Barrier", "running_for": 41.2, "mpi_rank": 0},
        1: {"state": "busy", "callee": "comm.Barrier", "running_for": 40.9, "mpi_rank": 1},
        2: {"state": "busy", "callee": "comm.Barrier", "running_for": 42.0, "mpi_rank": 2},
        3: {"state": "idle", "mpi_rank": 3},
        7: {"state": "draining", "task": None},
    }
    assert describe_activity(statuses) == "rank 0-2 in comm.Barrier for 41 s; rank 3 idle; engine 7 draining"


def test_innermost_call_skips_nothing_outside_the_engine() -> None:
    import sys

    def inner():
        return innermost_call(sys._getframe())

    where, callee = inner()
    assert where.endswith(" inner") and __file__ in where and callee == "innermost_call"
