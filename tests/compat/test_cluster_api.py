"""hpcpar.Cluster as ipyparallel users call it, one test per behaviour, on real local clusters
(and real MPICH ``mpiexec`` for the MPI ones)."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_mpi import require_mpi

import hpcpar
from hpcpar.cluster import Cluster, ClusterError
from hpcpar.launchers.process import ProcessRef

FAST = {"heartbeat_interval": 0.25, "heartbeat_timeout": 2.0}
COROUTINES = ["start_controller", "start_engines", "start_cluster", "start_and_connect", "connect_client",
              "wait_for_engines", "add_engines", "signal_engines", "stop_engines", "restart_engines",
              "restart_controller", "stop_controller", "stop_cluster"]


def name(what: str) -> str:
    return f"compat-{what}-{os.getpid()}"


def engine_pids(rc) -> list[int]:
    return rc[:].apply_sync(os.getpid)


def wait_dead(pids: list[int], timeout: float = 20.0) -> None:
    refs = [ProcessRef.of(p) for p in pids]
    deadline = time.monotonic() + timeout
    while any(r.alive() for r in refs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [r.pid for r in refs if r.alive()] == []


def wait_ids(rc, ids: list[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while rc.ids != ids and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rc.ids == ids


def cluster_pids(cluster: Cluster) -> list[int]:
    pids = [r.pid for r in cluster.controller.processes] if isinstance(cluster.controller.processes, list) else []
    for launcher in cluster.engines.values():
        refs = launcher.processes() if callable(launcher.processes) else launcher.processes
        pids += [r.pid for r in refs]
    return pids


@pytest.mark.timeout(120)
def test_plain_names_are_coroutines_and_sync_twins_block() -> None:
    for method in COROUTINES:
        assert inspect.iscoroutinefunction(getattr(Cluster, method)), method
        assert not inspect.iscoroutinefunction(getattr(Cluster, f"{method}_sync")), method

    async def main():
        cluster = hpcpar.Cluster(n=0, profile=name("await"), **FAST)
        assert await cluster.start_cluster() is cluster  # n=0: the controller only
        set_id = await cluster.start_engines(2)  # returns the engine set id
        assert list(cluster.engines) == [set_id] and cluster.engine_set is cluster.engines[set_id]
        rc = await cluster.wait_for_engines(2, timeout=60)
        ids = rc.ids
        await cluster.stop_cluster()
        return ids, cluster.state_file.exists()

    assert asyncio.run(main()) == ([0, 1], False)


@pytest.mark.timeout(90)
def test_with_cluster_gives_a_client_of_that_cluster_and_stops_it_on_exit() -> None:
    cluster = hpcpar.Cluster(n=2, profile=name("with"), **FAST)
    with cluster as rc:
        assert rc.cluster is cluster
        assert rc.ids == [0, 1]
        pids = cluster_pids(cluster)
        assert sorted(engine_pids(rc)) == sorted(pids[1:])
    assert not cluster.state_file.exists()
    wait_dead(pids)


@pytest.mark.timeout(90)
def test_async_with_cluster() -> None:
    async def main():
        cluster = hpcpar.Cluster(n=2, profile=name("async-with"), **FAST)
        async with cluster as rc:
            assert rc.cluster is cluster
            pids = cluster_pids(cluster)
            return rc[:].apply_sync(lambda: 6 * 7), pids, cluster.state_file

    results, pids, state = asyncio.run(main())
    assert results == [42, 42] and not state.exists()
    wait_dead(pids)


@pytest.mark.timeout(120)
def test_generated_cluster_ids_let_clusters_share_a_profile() -> None:
    profile = name("ids")
    a, b = Cluster(n=1, profile=profile, **FAST), Cluster(n=1, profile=profile, **FAST)
    assert re.fullmatch(r"\d{10}-[a-z0-9]{4}", a.cluster_id) and a.cluster_id != b.cluster_id
    assert Cluster(n=1, profile=profile, cluster_id="").cluster_id == ""  # the profile's default cluster
    ra = a.start_and_connect_sync()
    try:
        rb = b.start_and_connect_sync()
        try:
            assert a.state_file != b.state_file
            with hpcpar.Client(profile=profile, cluster_id=b.cluster_id, timeout=20) as other:
                assert other[0].apply_sync(os.getpid) == rb[0].apply_sync(os.getpid) != ra[0].apply_sync(os.getpid)
        finally:
            b.stop_cluster_sync()
        assert ra[0].apply_sync(lambda: "a still serves") == "a still serves"
    finally:
        a.stop_cluster_sync()


@pytest.mark.timeout(90)
def test_log_level_sets_the_cluster_logger(caplog) -> None:
    caplog.set_level(logging.NOTSET)
    loud = Cluster(n=1, profile=name("log"), log_level="INFO", **FAST)
    quiet = Cluster(n=1, profile=name("log"), log_level=logging.WARNING, **FAST)
    for cluster in (loud, quiet):
        with cluster:
            pass
    by_logger = {c.cluster_id: [r.getMessage() for r in caplog.records if r.name == c.log.name]
                 for c in (loud, quiet)}
    assert any(m.startswith("controller up: tcp://127.0.0.1:") for m in by_logger[loud.cluster_id]), by_logger
    assert "engines registered 1/1" in by_logger[loud.cluster_id]
    assert by_logger[quiet.cluster_id] == []


@pytest.mark.timeout(90)
def test_start_and_connect_activate_registers_px_on_all_engines() -> None:
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell
    from test_magics import Recorder, run

    from hpcpar.client import magics

    shell = InteractiveShell.instance()
    magics._active.clear()
    cluster = Cluster(n=2, profile=name("activate"), **FAST)
    rc = cluster.start_and_connect_sync(activate=True)
    try:
        shell.out, shell.err = Recorder(), Recorder()
        assert run(shell, "%px import os; where = os.getpid()").success
        assert sorted(rc[:].pull("where", block=True)) == sorted(engine_pids(rc))
    finally:
        magics._active.clear()
        cluster.stop_cluster_sync()


@pytest.mark.timeout(120)
def test_from_file_finds_a_running_cluster_by_profile_and_id() -> None:
    profile = name("from-file")
    default = Cluster(n=1, profile=profile, cluster_id="", **FAST)
    named = Cluster(n=1, profile=profile, **FAST)
    default.start_cluster_sync()
    named.start_cluster_sync()
    try:
        again = Cluster.from_file(profile=profile)  # cluster id "" by default, as ipyparallel
        assert again.cluster_id == "" and again.is_running() and list(again.engines) == list(default.engines)
        other = Cluster.from_file(profile=profile, cluster_id=named.cluster_id)
        assert other.cluster_file == named.cluster_file and list(other.engines) == list(named.engines)
        assert Cluster.from_file(named.cluster_file).cluster_id == named.cluster_id
        with pytest.raises(ClusterError, match="no cluster in profile .* with cluster id 'nope'"):
            Cluster.from_file(profile=profile, cluster_id="nope")
        pids = cluster_pids(named)
        other.stop_cluster_sync()  # stops it from another object, as `hpcpar stop` does
        wait_dead(pids)
        assert not Path(named.cluster_file).exists() and Path(default.cluster_file).exists()
    finally:
        default.stop_cluster_sync()
        named.stop_cluster_sync()


@pytest.mark.timeout(90)
def test_to_dict_and_from_dict_rebuild_a_cluster_that_can_stop_it() -> None:
    cluster = Cluster(n=2, profile=name("dict"), **FAST)
    cluster.start_and_connect_sync()
    try:
        d = json.loads(json.dumps(cluster.to_dict()))  # JSON-safe
        assert d["cluster"]["cluster_id"] == cluster.cluster_id and d["cluster"]["n"] == 2
        assert d["controller"]["class"] == "local" and d["engines"]["class"] == "local"
        assert set(d["engines"]["sets"]) == set(cluster.engines)
        rebuilt = Cluster.from_dict(d)
        assert rebuilt.to_dict() == d and rebuilt.is_running()
        pids = cluster_pids(cluster)
        rebuilt.stop_cluster_sync()
        wait_dead(pids)
        with pytest.raises(ClusterError, match="from_dict takes what Cluster.to_dict"):
            Cluster.from_dict({"engines": {}})
    finally:
        cluster.stop_cluster_sync()


@pytest.mark.timeout(150)
def test_controller_mpi_runs_the_controller_under_mpiexec() -> None:
    require_mpi()
    cluster = Cluster(n=2, profile=name("ctl-mpi"), controller="mpi", engines="mpi", **FAST)
    with cluster as rc:
        launcher = cluster.controller
        assert (launcher.name, launcher.role, launcher.n) == ("mpi", "controller", 1)
        argvs = [Path(f"/proc/{r.pid}/cmdline").read_bytes().split(b"\0") for r in launcher.processes()]
        assert any(b"mpiexec" in os.path.basename(a[0]) or b"hydra" in a[0] for a in argvs), argvs
        assert any(b"controller" in a and b"hpcpar" in a for a in argvs), argvs
        assert rc[:].apply_sync(lambda: 6 * 7) == [42, 42]
        assert rc[:].pull("mpi_size", block=True) == [2, 2]
        pids = [r.pid for r in launcher.processes()]
    wait_dead(pids)
    assert not cluster.state_file.exists()


@pytest.mark.timeout(90)
def test_cluster_manager_loads_creates_gets_and_removes_clusters() -> None:
    profile = name("manager")
    running = Cluster(n=1, profile=profile, **FAST)
    running.start_cluster_sync()
    try:
        manager = hpcpar.ClusterManager()
        key = f"{profile}:{running.cluster_id}"
        assert list(manager.load_clusters(profile=profile)) == [key] and manager.list_clusters() == [key]
        loaded = manager.get_cluster(key)
        assert loaded.is_running() and list(loaded.engines) == list(running.engines)
        new_key, new = manager.new_cluster(n=1, profile=profile, **FAST)
        assert new_key == f"{profile}:{new.cluster_id}" and new.state is None  # made, not started
        with pytest.raises(KeyError, match="exists already"):
            manager.new_cluster(profile=profile, cluster_id=running.cluster_id)
        manager.remove_cluster(new_key)
        assert manager.list_clusters() == [key]
        running.stop_cluster_sync()
        assert manager.load_clusters(profile=profile) == {}  # stopped clusters leave
    finally:
        running.stop_cluster_sync()


def _interrupted_by_signal_engines(cluster: Cluster, rc, tmp_path: Path) -> None:
    def _hold(path: str, seconds: float) -> None:  # nested: shipped by value, not imported by name
        import time

        open(path, "w").close()
        time.sleep(seconds)

    marks = [str(tmp_path / f"running-{eid}") for eid in rc.ids]
    ar = rc[:].map_async(_hold, marks, [60] * len(marks))
    deadline = time.monotonic() + 30
    while not all(os.path.exists(m) for m in marks) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(os.path.exists(m) for m in marks)
    cluster.signal_engines_sync("SIGINT")
    with pytest.raises(hpcpar.CompositeError) as info:
        ar.get(timeout=30)
    assert [e[0] for e in info.value.elist] == ["KeyboardInterrupt"] * len(marks)
    assert rc[:].apply_sync(lambda: "serving") == ["serving"] * len(marks)  # interrupted, not killed


@pytest.mark.timeout(90)
def test_signal_engines_interrupts_running_code(tmp_path) -> None:
    cluster = Cluster(n=2, profile=name("signal"), **FAST)
    with cluster as rc:
        _interrupted_by_signal_engines(cluster, rc, tmp_path)
        with pytest.raises(ValueError, match="unknown signal 'SIGNOPE'"):
            cluster.signal_engines_sync("SIGNOPE")


@pytest.mark.timeout(120)
def test_signal_engines_interrupts_an_mpi_set(tmp_path) -> None:
    require_mpi()
    cluster = Cluster(n=2, profile=name("signal-mpi"), engines="mpi", **FAST)
    with cluster as rc:
        _interrupted_by_signal_engines(cluster, rc, tmp_path)


@pytest.mark.timeout(120)
def test_stop_engines_stops_given_sets_or_engines() -> None:
    cluster = Cluster(n=2, profile=name("stop-engines"), **FAST)
    with cluster as rc:
        [first] = cluster.engines
        second = cluster.start_engines_sync(2)
        rc.wait_for_engines(4, timeout=60, interactive=False)
        assert cluster.engine_ids_by_set() == {first: [0, 1], second: [2, 3]}
        with pytest.raises(ClusterError, match="no engine set 'nope'"):
            cluster.stop_engines_sync("nope")
        cluster.stop_engines_sync(second)
        wait_ids(rc, [0, 1])
        assert list(cluster.engines) == [first]
        assert [s["id"] for s in json.loads(Path(cluster.cluster_file).read_text())["engine_sets"]] == [first]
        cluster.stop_engines_sync([1])  # an engine id: that engine only
        wait_ids(rc, [0])
        cluster.stop_engines_sync()
        wait_ids(rc, [])
        assert cluster.engines == {} and cluster.is_running()  # the controller stays


@pytest.mark.timeout(180)
def test_restart_engines_gives_an_mpi_set_its_ids_back() -> None:
    require_mpi()
    cluster = Cluster(n=2, profile=name("restart-mpi"), engines="mpi", **FAST)
    with cluster as rc:
        [first] = cluster.engines
        second = cluster.start_engines_sync(2)  # ranks 0-1 ask for ids 0-1, taken: they get 2-3
        rc.wait_for_engines(4, timeout=60, interactive=False)
        assert cluster.engine_ids_by_set() == {first: [0, 1], second: [2, 3]}
        before = rc[[2, 3]].apply_sync(os.getpid)
        rc[[2, 3]].execute("marker = 'old'", block=True)
        cluster.restart_engines_sync(second)
        rc.wait_for_engines(4, timeout=60, interactive=False)
        assert rc.ids == [0, 1, 2, 3] and list(cluster.engines) == [first, second]
        assert cluster.engine_ids_by_set() == {first: [0, 1], second: [2, 3]}
        assert set(rc[[2, 3]].apply_sync(os.getpid)).isdisjoint(before)  # new processes
        view = rc[[2, 3]]
        view.execute("total = comm.allreduce(mpi_rank)\nfresh = 'marker' not in dir()", block=True)
        assert view.pull("mpi_size", block=True) == [2, 2] and view.pull("total", block=True) == [1, 1]
        assert view.pull("fresh", block=True) == [True, True]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shutdown_atexit", [True, False])
def test_shutdown_atexit_stops_a_cluster_when_python_exits(shutdown_atexit: bool) -> None:
    profile = name(f"atexit-{shutdown_atexit}")
    script = (
        "import json, hpcpar\n"
        f"c = hpcpar.Cluster(n=1, profile={profile!r}, shutdown_atexit={shutdown_atexit}, "
        "heartbeat_interval=0.25, heartbeat_timeout=2.0)\n"
        "rc = c.start_and_connect_sync(timeout=60)\n"
        "print(json.dumps({'file': c.cluster_file, 'pids': [c.controller.processes[0].pid, *rc[:].apply_sync(__import__('os').getpid)]}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    started = json.loads(done.stdout.splitlines()[-1])
    if shutdown_atexit:
        assert "stopping <Cluster" in done.stderr
        wait_dead(started["pids"])
        assert not Path(started["file"]).exists()
    else:
        assert all(ProcessRef.of(p).alive() for p in started["pids"])
        Cluster.from_file(started["file"]).stop_cluster_sync()
        wait_dead(started["pids"])


def test_signal_names_and_numbers() -> None:
    from hpcpar.cluster.engines import parse_signal

    assert parse_signal("SIGINT") == parse_signal("int") == parse_signal(signal.SIGINT) == signal.SIGINT


@pytest.mark.timeout(90)
def test_ipyparallel_constructor_traits_are_accepted() -> None:
    cluster = Cluster(n=1, profile=name("traits"), engine_timeout=60, delay=0.1, controller_ip="127.0.0.1",
                      controller_location="127.0.0.1", engine_launcher_class="local",
                      controller_launcher_class="local", send_engines_connection_env=True, **FAST)
    with cluster as rc:
        argv = Path(f"/proc/{cluster.controller.processes[0].pid}/cmdline").read_bytes().split(b"\0")
        assert argv[argv.index(b"--location") + 1] == b"127.0.0.1" and argv[argv.index(b"--ip") + 1] == b"127.0.0.1"
        assert rc.ids == [0]
    with pytest.raises(TypeError, match="engines= or engine_launcher_class="):
        Cluster(engines="local", engine_launcher_class="local")


@pytest.mark.timeout(90)
def test_engine_timeout_bounds_start_and_connect() -> None:
    cluster = Cluster(n=1, profile=name("engine-timeout"), engine_timeout=0.001, **FAST)
    with pytest.raises(TimeoutError, match="0 of 1 engines registered after 0.001 s"):
        cluster.start_and_connect_sync()
    assert not cluster.state_file.exists()  # what was started is stopped


@pytest.mark.timeout(150)
def test_restart_engines_recovers_an_mpi_set_hung_in_a_collective() -> None:
    require_mpi()
    cluster = Cluster(n=3, profile=name("restart-hung"), engines="mpi", **FAST)
    with cluster as rc:
        hung = rc[:].execute("comm.Barrier() if mpi_rank < 2 else None")  # rank 2 never joins
        with pytest.raises(TimeoutError):
            hung.get(timeout=1)
        cluster.restart_engines_sync()
        rc.wait_for_engines(3, timeout=60, interactive=False)
        assert rc.ids == [0, 1, 2]
        with pytest.raises(hpcpar.CompositeError) as info:
            hung.get(timeout=30)  # the hung ranks' work fails, it is not lost
        assert {e[0] for e in info.value.elist} == {"EngineError"}
        rc[:].execute("total = comm.allreduce(mpi_rank)", block=True)
        assert rc[:].pull("total", block=True) == [3, 3, 3]


@pytest.mark.timeout(120)
def test_start_controller_connect_client_and_stop_controller() -> None:
    async def main() -> None:
        cluster = Cluster(n=0, profile=name("controller"), **FAST)
        info = await cluster.start_controller()
        assert info.urls and all(u.startswith("tcp://127.0.0.1:") for u in info.urls)
        rc = await cluster.connect_client()
        assert rc.cluster is cluster and rc.ids == []
        await cluster.start_engines(2)
        assert await cluster.wait_for_engines(2, timeout=60) is rc
        pids = engine_pids(rc)
        controller_pid = cluster.controller.processes[0].pid
        await cluster.stop_controller()
        wait_dead([controller_pid])
        assert cluster.controller is None and cluster.state_file.exists()  # the engine set is still recorded
        await cluster.stop_cluster()
        wait_dead(pids)
        assert not cluster.state_file.exists()

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_restart_controller_after_it_died_engines_reattach() -> None:
    cluster = Cluster(n=2, profile=name("restart-controller"), **FAST)
    with cluster as rc:
        pids = engine_pids(rc)
        os.kill(cluster.controller.processes[0].pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while cluster.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        cluster.restart_controller_sync()
        with hpcpar.Client(profile=cluster.profile_dir.name, cluster_id=cluster.cluster_id, timeout=20) as fresh:
            fresh.wait_for_engines(2, timeout=60, interactive=False)
            assert fresh.ids == [0, 1] and sorted(fresh[:].apply_sync(os.getpid)) == sorted(pids)
        with pytest.raises(ClusterError, match="is running; nothing to restore"):
            cluster.restart_controller_sync()


@pytest.mark.timeout(240)
def test_signal_and_restart_engines_of_a_slurm_set(tmp_path) -> None:
    """Batch engines: signal_engines goes through the controller, restart_engines cancels
    the job and submits a new one of the same size under the same engine set id."""
    from systems import require_system
    from test_cluster_batch import make_profile, queued

    require_system("slurm")
    pd = make_profile("compat-slurm")
    cluster = Cluster(n=2, profile=pd.name, engines="slurm")
    rc = cluster.start_and_connect_sync(timeout=120)
    try:
        [set_id] = cluster.engines
        [old_job] = cluster.engine_set.job_ids
        _interrupted_by_signal_engines(cluster, rc, tmp_path)
        old_ids = rc.ids
        cluster.restart_engines_sync()
        rc.wait_for_engines(2, timeout=120, interactive=False)
        assert list(cluster.engines) == [set_id] and cluster.engine_set.job_ids != [old_job]
        assert len(rc.ids) == 2 and set(rc.ids).isdisjoint(old_ids)  # not MPI: new ids, as ipyparallel
        assert queued("slurm", [old_job], os.environ) == []
        assert rc[:].apply_sync(lambda: 6 * 7) == [42, 42]
        jobs = cluster.engine_set.job_ids
    finally:
        cluster.stop_cluster_sync()
    deadline = time.monotonic() + 60
    while queued("slurm", jobs, os.environ) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert queued("slurm", jobs, os.environ) == []


@pytest.mark.timeout(300)
def test_restart_engines_recovers_a_hung_mpi_job_on_slurm() -> None:
    """An MPI engine set in one SLURM job (mode = "mpi"), hung in a collective on a subset:
    restart_engines cancels the job and submits a new one; its ranks get their old ids."""
    from systems import require_system
    from test_cluster_batch import CONFIG, queued

    require_system("slurm")
    require_mpi()
    from hpcpar.paths import ProfileDir

    pd = ProfileDir.for_profile(name("slurm-mpi"), create=True)
    (pd.path / "config.toml").write_text(CONFIG.replace("[batch]\n", '[batch]\nmode = "mpi"\n')
                                         + '[slurm]\nmpi_launcher = "srun"\nmpi_args = ["--mpi=pmi2"]\n')
    cluster = Cluster(n=2, profile=pd.name, engines="slurm")
    rc = cluster.start_and_connect_sync(timeout=120)
    try:
        first = cluster.engine_set
        second = cluster.start_engines_sync(2)  # ranks ask for ids 0-1, taken: they get 2-3
        rc.wait_for_engines(4, timeout=120, interactive=False)
        [old_job] = cluster.engines[second].job_ids
        hung = rc[[2, 3]].execute("comm.Barrier() if mpi_rank == 0 else None")
        with pytest.raises(TimeoutError):
            hung.get(timeout=1)
        cluster.restart_engines_sync(second)
        rc.wait_for_engines(4, timeout=120, interactive=False)
        assert rc.ids == [0, 1, 2, 3] and cluster.engine_set is first
        assert cluster.engines[second].job_ids != [old_job] and queued("slurm", [old_job], os.environ) == []
        with pytest.raises(hpcpar.CompositeError):
            hung.get(timeout=30)
        rc[[2, 3]].execute("total = comm.allreduce(mpi_rank)", block=True)
        assert rc[[2, 3]].pull("total", block=True) == [1, 1] and rc[[2, 3]].pull("mpi_rank", block=True) == [0, 1]
        jobs = [j for s in cluster.engines.values() for j in s.job_ids]
    finally:
        cluster.stop_cluster_sync()
    deadline = time.monotonic() + 60
    while queued("slurm", jobs, os.environ) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert queued("slurm", jobs, os.environ) == []
