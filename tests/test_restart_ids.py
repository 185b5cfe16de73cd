"""restart_engines frees the stopped engines' ids at once: each engine tells the controller
it leaves and waits for its answer before exiting (no heartbeat timeout to sit out, no late
heartbeat re-registering a ghost under the id), so an MPI set gets its ids back promptly.
Local sets get new ids, as in ipyparallel. An MPI rank stuck in a collective cannot run a
SIGTERM handler: restart_engines shuts the set's engines down through the controller first
(their I/O threads unregister), so even a hung MPI set gets its ids back at once."""

from __future__ import annotations

import os
import signal
import time

import pytest

import hpcpar
from hpcpar.cluster import Cluster

# A heartbeat timeout far above the waits below: an id freed only by a missed heartbeat
# makes restart_engines raise TimeoutError.
SLOW_DEATH = {"heartbeat_interval": 0.25, "heartbeat_timeout": 90.0}


def _controller_log(cluster: Cluster) -> str:
    return "".join(p.read_text() for p in cluster.profile_dir.log.glob("controller*.log"))


@pytest.mark.timeout(150)
def test_restart_engines_frees_the_ids_at_once() -> None:
    cluster = Cluster(n=2, profile=f"restart-ids-{os.getpid()}", **SLOW_DEATH)
    with cluster as rc:
        [set_id] = cluster.engines
        seen = set(rc.ids)
        for _ in range(3):  # the 2nd and 3rd stop engines that have only just registered
            old = rc.ids
            cluster.restart_engines_sync(timeout=30)
            rc.wait_for_engines(2, timeout=60, interactive=False)
            assert set(rc.ids).isdisjoint(seen) and cluster.engine_ids_by_set() == {set_id: rc.ids}
            assert not set(old) & set(rc.ids)
            seen |= set(rc.ids)
        assert rc[:].apply_sync(lambda: 6 * 7) == [42, 42]
        assert "is lost" not in _controller_log(cluster)  # each engine said it was leaving


@pytest.mark.timeout(180)
def test_restart_engines_gives_an_mpi_set_its_ids_back_at_once() -> None:
    from test_mpi import require_mpi

    require_mpi()
    cluster = Cluster(n=2, profile=f"restart-ids-mpi-{os.getpid()}", engines="mpi", **SLOW_DEATH)
    with cluster as rc:
        [set_id] = cluster.engines
        pids = set(rc[:].apply_sync(os.getpid))
        for hang in (False, True):
            if hang:  # rank 0 waits in a barrier rank 1 never joins: its SIGTERM handler cannot run
                hung = rc[:].execute("comm.Barrier() if mpi_rank == 0 else None")
                with pytest.raises(TimeoutError):
                    hung.get(timeout=1)
            cluster.restart_engines_sync(timeout=30)
            rc.wait_for_engines(2, timeout=60, interactive=False)
            assert rc.ids == [0, 1] and cluster.engine_ids_by_set() == {set_id: [0, 1]}
            now = set(rc[:].apply_sync(os.getpid))
            assert now.isdisjoint(pids)  # new processes under the old ids
            pids |= now
        assert rc[:].pull("mpi_rank", block=True) == [0, 1]
        with pytest.raises(hpcpar.CompositeError) as info:
            hung.get(timeout=30)  # the hung rank's task failed; it was not lost
        assert {e[0] for e in info.value.elist} == {"EngineError"}
        assert "is lost" not in _controller_log(cluster)


@pytest.mark.timeout(120)
def test_an_engine_stopped_with_sigterm_leaves_rc_ids_without_a_heartbeat_timeout() -> None:
    cluster = Cluster(n=2, profile=f"sigterm-ids-{os.getpid()}", **SLOW_DEATH)
    with cluster as rc:
        pid = rc[1].apply_sync(os.getpid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30  # a third of the heartbeat timeout
        while 1 in rc.ids and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rc.ids == [0]
        assert "is lost" not in _controller_log(cluster)
