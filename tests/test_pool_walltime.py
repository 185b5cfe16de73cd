"""The long one (about 7 minutes): a pool with a 2-minute walltime on the real SLURM runs
a load-balanced farm of 1-second tasks for 6 minutes through several generations of jobs.
Engines drain before their walltime and replacements are submitted ahead of it: no task is
lost or fails, and after start-up the cluster never has fewer than 2 engines."""

from __future__ import annotations

import os
import time

import pytest
from systems import require_system
from test_cluster_batch import env_for, make_profile, run

import hpcpar
from hpcpar.pool.state import read_pool

FARM_SECONDS = 360
CONFIG = """
[pool]
interval = 1.0
lead = 45.0
[batch.engines]
walltime = "00:02:00"
drain = 25
"""


@pytest.mark.timeout(720)
def test_a_farm_outlives_the_walltime_of_its_jobs() -> None:
    require_system("slurm")
    pd = make_profile("walltime", CONFIG)
    env = env_for("slurm")
    args = ["--profile", pd.name]
    start = run(["start", *args, "--engines", "slurm", "--min", "2", "--max", "4", "-n", "2", "--timeout", "120"],
                env, timeout=180)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        with hpcpar.Client(profile=pd.name, timeout=30) as rc:
            rc.wait_for_engines(2, timeout=60, interactive=False)
            lview = rc.load_balanced_view()
            fewest, engines_seen, results, pending = len(rc.ids), set(rc.ids), [], []
            deadline = time.monotonic() + FARM_SECONDS
            n = 0
            while time.monotonic() < deadline or pending:
                while time.monotonic() < deadline and len(pending) < 6:
                    pending.append(lview.apply_async(lambda i: (__import__("time").sleep(1.0), i)[1], n))
                    n += 1
                done = [ar for ar in pending if ar.ready()]
                for ar in done:
                    pending.remove(ar)
                    results.append(ar.get(timeout=5))  # raises if any task failed
                ids = rc.ids
                fewest = min(fewest, len(ids))
                engines_seen.update(ids)
                time.sleep(0.2)
        assert sorted(results) == list(range(n)), "lost tasks"
        assert fewest >= 2, f"only {fewest} engine(s) at some point"
        decisions = read_pool(pd).decisions  # the last 50, from the pool file
        replaced = [d for d in decisions if "within 45 s of their walltime" in d["reason"]]
        assert len(replaced) >= 2, decisions  # at least two generations of replacements
        assert len(engines_seen) >= 6, engines_seen  # replacements get new ids
        print(f"{n} tasks, {len(engines_seen)} engine ids, fewest engines {fewest}, {len(replaced)} replacement "
              "submissions", file=__import__("sys").stderr)
    finally:
        stop = run(["stop", *args], env, timeout=150)
    assert stop.returncode == 0, stop.stderr
    assert os.path.exists(pd.path)
