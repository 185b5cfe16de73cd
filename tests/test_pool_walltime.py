"""The long one (about 7 minutes): on the real SLURM and the real Grid Engine at once, a pool
with a 2-minute walltime runs a load-balanced farm of 1-second tasks for 6 minutes through
several generations of jobs. Engines drain before their walltime and replacements are
submitted ahead of it: no task is lost or fails, and after start-up the cluster never has
fewer than 2 engines.

The two farms run side by side (a thread each, one client each), so covering both systems
costs the wall time of one. CI runs this file in a lane of its own, next to the rest of the
suite (ci/test.sh); it sizes the pools so that both together (4 engines each, plus up to 4
replacements each) leave half of the 16 CPUs / slots of each system to the other tests."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from systems import require_system
from test_cluster_batch import env_for, make_profile, run

import hpcpar
from hpcpar.paths import ProfileDir
from hpcpar.pool.state import read_pool

SYSTEMS = ("slurm", "sge")
FARM_SECONDS = 360
SETTLE_SECONDS = 120  # after the farm: the last tasks must finish within this
CONFIG = """
[pool]
interval = 1.0
lead = 45.0
# max caps every job in the queue; the farm grows to max, so replacements need room above it
surge = 4
[batch.engines]
walltime = "00:02:00"
drain = 25
"""


@dataclass
class Farm:
    """What one farm saw, checked by the test after both farms ended."""

    system: str
    tasks: int = 0
    results: list[int] = field(default_factory=list)
    fewest: int = 0
    engines_seen: set[int] = field(default_factory=set)
    decisions: list[dict] = field(default_factory=list)


def farm(system: str, pd: ProfileDir) -> Farm:
    """Start the pool, keep 6 one-second tasks in flight for FARM_SECONDS, collect them all."""
    start = run(["start", "--profile", pd.name, "--engines", system, "--min", "2", "--max", "4", "-n", "2",
                 "--timeout", "120"], env_for(system), timeout=180)
    assert start.returncode == 0, f"{system}: {start.stdout}{start.stderr}"
    seen = Farm(system)
    with hpcpar.Client(profile=pd.name, timeout=30) as rc:
        rc.wait_for_engines(2, timeout=60, interactive=False)
        lview = rc.load_balanced_view()
        seen.fewest, pending = len(rc.ids), []
        seen.engines_seen.update(rc.ids)
        deadline = time.monotonic() + FARM_SECONDS
        settle = deadline + SETTLE_SECONDS
        while time.monotonic() < deadline or pending:
            assert time.monotonic() < settle, f"{system}: {len(pending)} task(s) unfinished {SETTLE_SECONDS} s " \
                                              "after the farm stopped submitting"
            while time.monotonic() < deadline and len(pending) < 6:
                pending.append(lview.apply_async(lambda i: (__import__("time").sleep(1.0), i)[1], seen.tasks))
                seen.tasks += 1
            for ar in [ar for ar in pending if ar.ready()]:
                pending.remove(ar)
                seen.results.append(ar.get(timeout=5))  # raises if any task failed
            ids = rc.ids
            seen.fewest = min(seen.fewest, len(ids))
            seen.engines_seen.update(ids)
            time.sleep(0.2)
    pool = read_pool(pd)  # while the pool still runs: `hpcpar stop` removes its file
    assert pool is not None, f"{system}: no pool file in {pd.path}"
    seen.decisions = pool.decisions  # the last 50
    return seen


@pytest.mark.timeout(900)
def test_farms_outlive_the_walltime_of_their_jobs_on_slurm_and_sge() -> None:
    for system in SYSTEMS:
        require_system(system)
    profiles = {system: make_profile(f"walltime-{system}", CONFIG) for system in SYSTEMS}
    try:
        with ThreadPoolExecutor(len(SYSTEMS), thread_name_prefix="farm") as pool:
            futures = {system: pool.submit(farm, system, pd) for system, pd in profiles.items()}
        farms, failed = {}, {}
        for system, future in futures.items():
            try:
                farms[system] = future.result()
            except Exception as exc:  # both systems' failures are reported together
                failed[system] = exc
        if failed:
            raise AssertionError("; ".join(f"{system}: {exc!r}" for system, exc in failed.items())) \
                from next(iter(failed.values()))
    finally:
        stops = {system: run(["stop", "--profile", pd.name], env_for(system), timeout=150)
                 for system, pd in profiles.items()}
    for system, seen in farms.items():
        assert sorted(seen.results) == list(range(seen.tasks)), f"{system}: lost tasks"
        assert seen.fewest >= 2, f"{system}: only {seen.fewest} engine(s) at some point"
        replaced = [d for d in seen.decisions if "within 45 s of their walltime" in d["reason"]]
        assert len(replaced) >= 2, (system, seen.decisions)  # at least two generations of replacements
        assert len(seen.engines_seen) >= 6, (system, seen.engines_seen)  # replacements get new ids
        print(f"{system}: {seen.tasks} tasks, {len(seen.engines_seen)} engine ids, fewest engines {seen.fewest}, "
              f"{len(replaced)} replacement submissions", file=sys.stderr)
    for system, stop in stops.items():
        assert stop.returncode == 0, f"{system}: {stop.stderr}"
        assert os.path.exists(profiles[system].path)
