"""One forwarder per node of a real SLURM engine job ([batch] forwarder_per_node, issue #8):
the job script starts `hpcpar forwarder` on each node, the engines of a node connect to it,
a broadcast leaves the controller once per node, and `hpcpar stop` leaves no process.

The test SLURM has two nodes in two partitions (one a network namespace with its own host
name), so one job spans one node: the test runs once on each.
In CI (CI=true) a missing system or MPI fails this test; elsewhere it skips."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
from cluster_helpers import check_batch_job_gone, hpcpar_cmd, stop_profile
from systems import CI_ENV, require_system
from test_mpi import require_mpi

import hpcpar
from hpcpar.cluster import Cluster
from hpcpar.launchers.process import ProcessRef
from hpcpar.launchers.slurm import SlurmLauncher
from hpcpar.paths import ProfileDir

CONFIG = (
    '[controller]\nheartbeat_interval = 0.25\nheartbeat_timeout = 2.0\n'
    '[batch]\nmode = "mpi"\nwalltime = "00:10:00"\npoll_interval = 0.2\npoll_max_interval = 1.0\n'
    '[slurm]\nforwarder_per_node = true\nmpi_args = ["--mpi=pmi2"]\n'
)


def forwarding(rc) -> dict:
    return rc._request("engines_request", {}, timeout=10).meta["forwarding"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("system", ["slurm", "slurm-netns"])
def test_slurm_job_runs_one_forwarder_per_node_and_stop_leaves_no_process(system, hpcpar_dir) -> None:
    require_system(system)
    require_mpi()
    profile = f"fwd-{system}-{os.getpid()}"
    pd = ProfileDir.for_profile(profile, create=True)
    if system == "slurm-netns":
        # The forwarder uses the first URL of the engine file: the head node's namespace address.
        head = CI_ENV.get("HPCPAR_NETNS_HEAD_ADDR", "10.200.0.1")
        partition = CI_ENV.get("HPCPAR_SLURM_NETNS_PARTITION", "netns")
        node = CI_ENV.get("HPCPAR_SLURM_NETNS_NODE", "compute1")
        config = CONFIG.replace("[batch]\n", f"location = {head!r}\n[batch]\nqueue = {partition!r}\n")
    else:
        node, config = socket.gethostname(), CONFIG
    (pd.path / "config.toml").write_text(config)
    n = 3
    try:
        start = subprocess.run(hpcpar_cmd("start", "-n", str(n), "--engines", "slurm", "--ip", "*", "--profile", profile,
                                          "--daemonize", "--wait", "--timeout", "90"),
                               capture_output=True, text=True, timeout=120)
        assert start.returncode == 0, start.stdout + start.stderr
        cluster = Cluster.from_file(pd.state_file(""))
        [launcher] = cluster.engine_sets
        assert isinstance(launcher, SlurmLauncher) and len(launcher.job_ids) == 1
        with hpcpar.Client(profile=profile, timeout=20) as rc:
            rc.wait_for_engines(n, timeout=30, interactive=False)
            [fwd] = forwarding(rc)["forwarders"]
            assert fwd["name"] == node and fwd["engines"] == n
            before = forwarding(rc)
            hosts = rc[:].apply_sync(socket.gethostname)
            assert hosts == [node] * n
            after = forwarding(rc)
            assert after["request_copies"] - before["request_copies"] == 1  # one per node, not n
            assert after["batched_replies"] - before["batched_replies"] == n
            pids = [ProcessRef.of(e["pid"]) for e in rc._engines.values()] + [ProcessRef.of(fwd["pid"])]
        assert list(pd.security.glob("*-forwarder-*.json"))  # the forwarder wrote its file
    except BaseException:
        stop_profile(profile, check=False)
        raise
    stop_profile(profile)
    check_batch_job_gone(launcher, pids)
    assert not list(pd.security.glob("*-forwarder-*.json"))


@pytest.mark.timeout(60)
def test_engine_via_local_forwarder_names_a_missing_or_stale_forwarder(tmp_path) -> None:
    """No file, or the file of a forwarder that died (SIGKILL leaves it): a clear error, no hang."""
    from hpcpar.commands.forwarder import forwarder_file
    from hpcpar.connection import ConnectionInfo

    env = {**os.environ, "HPCPAR_DIR": str(tmp_path)}
    argv = hpcpar_cmd("engine", "--via-local-forwarder", "--wait-for-file", "1")
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "nothing there" in r.stderr and socket.gethostname() in r.stderr
    dead = subprocess.Popen(["true"])
    dead.wait()
    path = forwarder_file(ProfileDir(tmp_path / "profile_default"), "", socket.gethostname())
    ConnectionInfo(key="k", urls=["tcp://127.0.0.1:9"], role="engine",
                   extra={"forwarder_pid": dead.pid}).write(path)
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "a forwarder that is gone" in r.stderr, r.stderr
    r = subprocess.run(hpcpar_cmd("engine", "--via-local-forwarder", "--file", str(path)), env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "not both" in r.stderr
