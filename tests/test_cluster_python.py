"""The Python API of Cluster (context managers, coroutines and their _sync twins, add_engines,
config layers and overrides) and `hpcpar engines`, on local clusters. The ipyparallel
compatibility of Cluster is in tests/compat/test_cluster_api.py."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import pytest
from cluster_helpers import hpcpar_cmd

import hpcpar
from hpcpar.cluster import Cluster
from hpcpar.config import ConfigError
from hpcpar.launchers.process import ProcessRef
from hpcpar.paths import ProfileDir

FAST = {"heartbeat_interval": 0.25, "heartbeat_timeout": 2.0}


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().decode().split("\0")


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def engine_refs(rc) -> list[ProcessRef]:
    return [ProcessRef.of(e["pid"]) for e in rc._engines.values()]


def wait_dead(refs: list[ProcessRef], timeout: float) -> float:
    start = time.monotonic()
    while any(r.alive() for r in refs) and time.monotonic() - start < timeout:
        time.sleep(0.1)
    assert not any(r.alive() for r in refs), "processes still alive"
    return time.monotonic() - start


@pytest.mark.timeout(60)
def test_context_manager_with_overrides_reaching_the_controller() -> None:
    name = f"api-with-{os.getpid()}"
    cluster = hpcpar.Cluster(n=2, profile=name, **FAST)
    with cluster as rc:
        assert rc.ids == [0, 1]
        assert rc[:].apply_sync(lambda: 6 * 7) == [42, 42]
        argv = cmdline(cluster.controller.processes[0].pid)
        assert (flag(argv, "--heartbeat-interval"), flag(argv, "--heartbeat-timeout"), flag(argv, "--ip")) == (
            "0.25", "2", "127.0.0.1")
        refs = engine_refs(rc)
        assert flag(cmdline(refs[0].pid), "--controller-timeout") == "60"
    assert not cluster.state_file.exists()
    wait_dead(refs, 10)


@pytest.mark.timeout(60)
def test_async_with_and_async_twins() -> None:
    name = f"api-async-{os.getpid()}"

    async def main() -> tuple[list[int], list[int], list]:
        async with hpcpar.Cluster(n=2, profile=name, **FAST) as rc:
            first = rc.ids
        cluster = hpcpar.Cluster(n=1, profile=name, **FAST)
        rc = await cluster.start_and_connect()
        try:
            await cluster.add_engines(1, wait=True, timeout=30)
            second = rc.ids
        finally:
            await cluster.stop_cluster()
        return first, second, list(ProfileDir.for_profile(name).run.glob("cluster*.json"))

    assert asyncio.run(main()) == ([0, 1], [0, 1], [])


@pytest.mark.timeout(60)
def test_sync_names_of_ipyparallel_and_add_engines() -> None:
    cluster = Cluster(n=1, profile=f"api-sync-{os.getpid()}", **FAST)
    rc = cluster.start_and_connect_sync()
    try:
        assert asyncio.iscoroutinefunction(Cluster.start_cluster) and not asyncio.iscoroutinefunction(
            Cluster.start_cluster_sync)
        cluster.add_engines_sync(2, wait=True, timeout=30)
        assert rc.ids == [0, 1, 2] and cluster.n == 3
        again = Cluster.from_file(cluster.state_file)  # what `hpcpar stop` sees
        assert [s.n for s in again.engine_sets] == [1, 2] and again.job_states() == []
        refs = engine_refs(rc)
    finally:
        cluster.stop_cluster_sync()
    wait_dead(refs, 10)


def test_invalid_settings_fail_before_anything_starts() -> None:
    name = f"api-invalid-{os.getpid()}"
    with pytest.raises(ConfigError, match="did you mean 'walltime'"):
        Cluster(n=1, profile=name, wallclock="1:00:00")
    with pytest.raises(ConfigError, match="walltime"):
        Cluster(n=1, profile=name, walltime="soon")
    cluster = Cluster(n=2, profile=name, engines="slurm")  # loopback controller, batch engines
    with pytest.raises(ConfigError, match="ip"):
        cluster.start_cluster_sync()
    assert not cluster.state_file.exists() and not cluster.profile_dir.client_file(cluster.cluster_id).exists()


@pytest.mark.timeout(60)
def test_engines_follow_controller_timeout_from_the_profile() -> None:
    """[engine] controller_timeout in config.toml reaches the engines: when the controller
    is SIGKILLed they exit by themselves that many seconds later."""
    pd = ProfileDir.for_profile(f"api-ctimeout-{os.getpid()}", create=True)
    (pd.path / "config.toml").write_text(
        "[engine]\ncontroller_timeout = 10.0\n[controller]\nheartbeat_interval = 0.25\nheartbeat_timeout = 2.0\n")
    cluster = Cluster(n=2, profile=pd.name)
    rc = cluster.start_and_connect_sync(timeout=30)
    try:
        refs = engine_refs(rc)
        assert flag(cmdline(refs[0].pid), "--controller-timeout") == "10"
        rc.close()
        cluster._client = None
        cluster.controller.processes[0].signal(signal.SIGKILL)
        took = wait_dead(refs, 30)
        assert 5 < took < 25
    finally:
        cluster.stop_cluster_sync()


@pytest.mark.timeout(90)
def test_hpcpar_engines_adds_to_a_running_cluster() -> None:
    name = f"cli-engines-{os.getpid()}"
    start = subprocess.run(hpcpar_cmd("start", "--profile", name, "-n", "1", "--daemonize", "--wait"),
                           capture_output=True, text=True, timeout=60)
    try:
        assert start.returncode == 0, start.stderr
        assert "engines registered 1/1" in start.stdout
        more = subprocess.run(hpcpar_cmd("engines", "--profile", name, "-n", "2"), capture_output=True, text=True,
                              timeout=60)
        assert more.returncode == 0, more.stderr
        assert "engines registered 3/3" in more.stdout and "3 engines in the cluster" in more.stdout
        with hpcpar.Client(profile=name, timeout=20) as rc:
            assert rc.ids == [0, 1, 2]
            refs = engine_refs(rc)
        listed = subprocess.run(hpcpar_cmd("list"), capture_output=True, text=True, timeout=30).stdout
        assert any(line.startswith(name) and " 3 " in line for line in listed.splitlines()), listed
    finally:
        stop = subprocess.run(hpcpar_cmd("stop", "--profile", name), capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    wait_dead(refs, 10)
    none = subprocess.run(hpcpar_cmd("engines", "--profile", name, "-n", "1"), capture_output=True, text=True,
                          timeout=30)
    assert none.returncode == 1 and "no running cluster" in none.stderr
