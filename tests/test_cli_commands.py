"""Every command agrees which cluster it means, and options mean the same everywhere.

Real local clusters (controller and engines as processes on loopback), driven through
the `hpcpar` command as users type it. No batch system needed: ci/test.sh also runs
these on the oldest and newest supported Python.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from cluster_helpers import FAST_HEARTBEAT, hpcpar_cmd


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(hpcpar_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd="/")


def ok(*args: str, timeout: float = 120) -> str:
    r = run(*args, timeout=timeout)
    assert r.returncode == 0, f"hpcpar {' '.join(args)}: {r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    return r.stdout


def start(profile: str, n: int, cluster_id: str = "") -> None:
    ids = ["--cluster-id", cluster_id] if cluster_id else []
    ok("start", "--profile", profile, *ids, "-n", str(n), "--daemonize", "--wait", "--timeout", "90",
       "--set", f"controller.heartbeat_interval={float(FAST_HEARTBEAT[1])}",
       "--set", f"controller.heartbeat_timeout={float(FAST_HEARTBEAT[3])}", timeout=150)


@pytest.fixture
def profile(request) -> str:
    name = f"cmd-{os.getpid()}-{request.node.name[:30]}".replace("[", "-").replace("]", "")
    yield name
    from hpcpar.commands.which import cluster_ids
    from hpcpar.paths import ProfileDir

    for cid in cluster_ids(ProfileDir.for_profile(name)):
        run("stop", "--profile", name, "--cluster-id", cid, timeout=120)


def test_stop_and_status_find_the_only_cluster_of_a_profile(profile):
    start(profile, 1, cluster_id="only")
    status = json.loads(ok("status", "--profile", profile, "--json"))
    assert status["cluster_id"] == "only" and len(status["engines"]) == 1
    listed = json.loads(ok("list", "--profile", profile, "--json"))
    assert [r["cluster_id"] for r in listed] == ["only"]
    assert "stopped cluster (profile" in ok("stop", "--profile", profile)
    assert json.loads(ok("list", "--profile", profile, "--json")) == []


def test_with_several_clusters_stop_and_status_ask_which(profile):
    start(profile, 1, cluster_id="a")
    start(profile, 1, cluster_id="b")
    for command in (["stop"], ["status"], ["logs"], ["engines", "-n", "1"], ["restart", "--engines"]):
        r = run(*command, "--profile", profile)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert "has 2 clusters (cluster ids: a, b)" in r.stderr and "--cluster-id" in r.stderr, r.stderr
    ok("stop", "--profile", profile, "--cluster-id", "a")
    assert "cluster id 'b'" in ok("stop", "--profile", profile)  # now the only one


def test_list_takes_profile_and_shows_only_its_clusters(profile):
    start(profile, 1)
    other = ok("list", "--profile", f"{profile}-none")
    assert "no clusters in profile" in other
    mine = ok("list", "--profile", profile)
    assert profile in mine and mine.count("\n") == 2  # header + one row


def test_logs_n_is_the_engine_id_and_index_the_launch_slot(profile):
    start(profile, 2)
    added = run("engines", "--profile", profile, "-n", "1", "--timeout", "90")
    assert added.returncode == 0, added.stderr
    listing = ok("logs", "--profile", profile, "--list")
    assert "ENGINE ID" in listing
    # Engine id 2 is the added set's launch slot 0: `logs 2` is that engine's own output.
    assert "registered as engine 2 via" in ok("logs", "--profile", profile, "2")
    slot = ok("logs", "--profile", profile, "--set", "1", "--index", "0")
    assert "registered as engine 2 via" in slot
    first = ok("logs", "--profile", profile, "--index", "0")
    assert "registered as engine 2 via" not in first and "registered as engine" in first
    r = run("logs", "--profile", profile, "9")
    assert r.returncode == 1 and "no engine id 9" in r.stderr and "engine ids: 0, 1, 2" in r.stderr


def test_stop_stops_a_controller_started_by_hand(profile):
    from hpcpar.paths import ProfileDir

    pd = ProfileDir.for_profile(profile)
    proc = subprocess.Popen(hpcpar_cmd("controller", "--profile", profile, *FAST_HEARTBEAT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not pd.client_file().exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        status = json.loads(ok("status", "--profile", profile, "--json"))
        assert status["controller"]["reachable"] and status["controller"]["pid"] == proc.pid
        out = ok("stop", "--profile", profile)
        assert "stopped the controller started by hand" in out
        assert proc.wait(timeout=30) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    r = run("status", "--profile", profile)
    assert r.returncode == 1 and "no cluster in profile" in r.stderr


def test_render_takes_profile_dir(tmp_path: Path):
    pd = tmp_path / "myprofile"
    pd.mkdir()
    (pd / "config.toml").write_text('[cluster]\nengines = "slurm"\nn = 3\n[controller]\nip = "*"\n'
                                    '[batch]\nqueue = "fromdir"\n')
    out = ok("render", "--profile-dir", str(pd))
    assert "#SBATCH --partition=fromdir" in out and "#SBATCH --array=1-3" in out
    assert str(pd / "log") in out  # job output goes to that profile directory


def _listed(profile: str, *more: str) -> list[dict]:
    return [r for r in json.loads(ok("list", "--json", *more)) if r["profile"] == profile]


def _by_hand(*args: str, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(hpcpar_cmd(*args), stdout=out, stderr=subprocess.STDOUT, cwd="/")


def _wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


def test_list_status_and_stop_agree_on_a_controller_started_by_hand(profile, tmp_path):
    """The documented hand start (`hpcpar controller --profile-dir ... --ip '*'`, then
    `hpcpar engine --file .../hpcpar-engine.json`): `list` shows it (by hand, alive, its
    engine), with --profile filtering; once it is SIGKILLed, list, status and stop all say it
    is not running and how to clean up, and the restart `list` suggests works."""
    from hpcpar.paths import ProfileDir

    pd = ProfileDir.for_profile(profile)
    controller_args = ("controller", "--profile-dir", str(pd.path), "--ip", "*")
    procs = [_by_hand(*controller_args, log=tmp_path / "controller.log")]
    try:
        _wait_for(pd.client_file().exists, 60, "the connection file")
        procs.append(_by_hand("engine", "--file", str(pd.engine_file()), log=tmp_path / "engine.log"))
        _wait_for(lambda: _listed(profile)[0]["engines"] == 1, 60, "the engine in 'hpcpar list'")
        row = _listed(profile)[0]
        assert (row["started"], row["running"], row["controller_pid"]) == ("by hand", True, procs[0].pid)
        assert _listed(profile, "--profile", profile) == [row]
        assert _listed(profile, "--profile", f"{profile}-other") == []
        table = ok("list", "--profile", profile).splitlines()
        assert table[0].split() == ["PROFILE", "CLUSTER", "ID", "ENGINES", "PID", "RUNNING", "LAUNCHER", "JOBS"]
        assert table[1].split() == [profile, "-", "1", str(procs[0].pid), "true", "by", "hand", "-"]
        status = json.loads(ok("status", "--profile", profile, "--json"))
        assert status["controller"]["pid"] == procs[0].pid and len(status["engines"]) == 1
        # `start` does not overwrite its connection files (which would hide it from every command).
        r = run("start", "--profile", profile, "-n", "1", "--daemonize")
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert f"a controller started by hand (pid {procs[0].pid}) runs in profile" in r.stderr, r.stderr
        assert f"'hpcpar stop --profile {profile}'" in r.stderr and _listed(profile)[0]["started"] == "by hand"

        # Dead: every command says so, with the same way out, at once (no connection timeout).
        procs[0].kill()
        procs[0].wait(timeout=30)
        row = _listed(profile)[0]
        assert (row["started"], row["running"], row["engines"]) == ("by hand", False, None)
        restart = f"'hpcpar controller --profile {profile} --restore'"
        cleanup = f"'hpcpar stop --profile {profile}'"
        assert "is not running" in row["hint"] and restart in row["hint"] and cleanup in row["hint"]
        listing = ok("list", "--profile", profile)
        assert f" {procs[0].pid}  false" in listing and f"note: {row['hint']}" in listing
        r = run("status", "--profile", profile, "--timeout", "30")
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert "started by hand" in r.stdout and "is not running" in r.stdout, r.stdout
        assert restart in r.stdout and cleanup in r.stdout, r.stdout
        import hpcpar

        with pytest.raises(TimeoutError) as gone:  # Client() says the same, at once
            hpcpar.Client(profile=profile, timeout=30)
        assert "started by hand" in str(gone.value) and restart in str(gone.value), gone.value

        # The restart list suggests (with the options it had): the engine re-attaches.
        procs[0] = _by_hand(*controller_args, "--restore", log=tmp_path / "controller.log")
        _wait_for(lambda: _listed(profile)[0]["engines"] == 1, 90, "the engine to re-attach")
        assert _listed(profile)[0]["controller_pid"] == procs[0].pid
        with hpcpar.Client(profile=profile, timeout=30) as rc:
            assert rc[:].apply_sync(os.getpid) == [procs[1].pid]

        # Dead again: stop removes what it left and says there was nothing running.
        procs[0].kill()
        procs[0].wait(timeout=30)
        out = ok("stop", "--profile", profile)
        assert "no controller was running" in out and "removed its stale hpcpar-client.json" in out, out
        assert not pd.client_file().exists() and not pd.engine_file().exists()
        assert _listed(profile) == [] and "no clusters in profile" in ok("list", "--profile", profile)
        r = run("status", "--profile", profile)
        assert r.returncode == 1 and "no cluster in profile" in r.stderr
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)


def test_list_says_how_to_recover_a_started_cluster_whose_controller_died(profile):
    start(profile, 1)
    row = _listed(profile)[0]
    assert (row["started"], row["running"], row["hint"]) == ("hpcpar start", True, None)
    os.kill(row["controller_pid"], 9)
    _wait_for(lambda: _listed(profile)[0]["running"] is False, 30, "list to see the controller gone")
    hint = _listed(profile)[0]["hint"]
    assert f"'hpcpar start --profile {profile} --restore'" in hint and f"'hpcpar stop --profile {profile}'" in hint
    assert f"note: {hint}" in ok("list", "--profile", profile)
    assert "stopped cluster" in ok("stop", "--profile", profile)
    assert _listed(profile) == []


def test_cluster_stop_after_its_controller_was_killed_leaves_nothing_for_list(profile):
    """The Python API's stop_cluster cleans up as `hpcpar stop` does: the files a SIGKILLed
    controller left would otherwise show in list as a dead controller started by hand."""
    from hpcpar.cluster import Cluster

    c = Cluster(n=1, profile=profile, cluster_id="py", controller_args=FAST_HEARTBEAT)
    c.start_cluster_sync()
    try:
        c.wait_for_engines_sync(timeout=60, interactive=False)
        row = _listed(profile)[0]
        assert (row["cluster_id"], row["started"], row["running"]) == ("py", "hpcpar start", True), row
        os.kill(row["controller_pid"], 9)
        _wait_for(lambda: _listed(profile)[0]["running"] is False, 30, "list to see the controller gone")
    finally:
        c.stop_cluster_sync()
    pd = c.profile_dir
    assert not pd.client_file("py").exists() and not pd.engine_file("py").exists()
    assert _listed(profile) == []
