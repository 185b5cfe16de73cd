"""Engines behind forwarders (issue #8): everything works as with direct engines, a
broadcast leaves the controller once per forwarder, and failures are reported."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from cluster_helpers import (
    FAST_HEARTBEAT,
    check_stopped_engine_comes_back,
    hpcpar_cmd,
    start_cluster,
)

import hpcpar
from hpcpar.commands.forwarder import forwarder_file


def forwarding(rc) -> dict:
    return rc._request("engines_request", {}, timeout=10).meta["forwarding"]


def set_pids(launcher) -> set[int]:
    return {p.pid for p in launcher.processes}


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture(scope="module")
def tree():
    """8 engines through 2 forwarders (4 each)."""
    cluster, rc = start_cluster(8, f"fwd-{os.getpid()}", forwarders=2)
    yield cluster, rc
    rc.close()
    cluster.stop_cluster_sync()


def test_engines_behind_forwarders_serve_everything(tree):
    cluster, rc = tree
    assert len(rc.ids) == 8
    pids = rc[:].apply_sync(os.getpid)
    assert set(pids) == set().union(*(set_pids(s) for s in cluster.engine_sets))
    assert rc[rc.ids[3]].apply_sync(pow, 2, 10) == 1024
    arr = np.arange(100_000, dtype=np.float64)
    dv = rc[:]
    dv.push({"a": arr, "b": 7}, block=True)
    for got in dv.pull("a", block=True):
        np.testing.assert_array_equal(got, arr)
    assert dv.pull("b", block=True) == [7] * 8
    ar = dv.execute("print('hello from', b)", block=True)
    assert ar.stdout == ["hello from 7\n"] * 8
    lview = rc.load_balanced_view()
    assert lview.map_sync(lambda x: x * x, range(50)) == [x * x for x in range(50)]
    # Non-blocking broadcasts are not batched: each reply comes on its own.
    assert dv.apply_async(sum, [1, 2]).get(timeout=20) == [3] * 8


def test_output_streams_through_a_forwarder_while_the_task_runs(tree):
    cluster, rc = tree
    code = "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.4)\n"
    ar = rc[rc.ids[5]].execute(code, block=False)
    deadline = time.time() + 5
    while "tick 0" not in ar.stdout and time.time() < deadline:
        time.sleep(0.02)
    assert "tick 0" in ar.stdout and not ar.ready()  # relayed before the end
    ar.get(timeout=10)
    assert ar.stdout == "tick 0\ntick 1\ntick 2\n"


def test_broadcast_leaves_the_controller_once_per_forwarder(tree):
    cluster, rc = tree
    info = forwarding(rc)
    assert sorted(f["engines"] for f in info["forwarders"]) == [4, 4]
    before = forwarding(rc)
    assert rc[:].apply_sync(os.getpid) and True
    after = forwarding(rc)
    assert after["request_copies"] - before["request_copies"] == 2  # not 8
    assert after["fanouts"] - before["fanouts"] == 2
    assert after["batched_replies"] - before["batched_replies"] == 8  # 2 batches of 4 replies
    rc[:].push({"big": np.ones(1 << 20)}, block=True)
    assert forwarding(rc)["request_copies"] - after["request_copies"] == 2


def test_killed_engine_behind_forwarder_and_killed_forwarder(request):
    cluster, rc = start_cluster(6, f"fwd-kill-{os.getpid()}", forwarders=2)
    request.addfinalizer(cluster.stop_cluster_sync)
    request.addfinalizer(rc.close)
    by_pid = dict(zip(rc[:].apply_sync(os.getpid), rc.ids))
    first, second = (sorted(by_pid[p] for p in set_pids(s)) for s in cluster.engine_sets)

    # An engine behind a forwarder, SIGKILLed: its task fails, the others go on.
    victim = first[0]
    ar = rc[victim].apply_async(time.sleep, 30)
    time.sleep(0.3)
    os.kill(next(p for p, e in by_pid.items() if e == victim), signal.SIGKILL)
    with pytest.raises(hpcpar.EngineError, match=f"engine {victim}"):
        ar.get(timeout=15)
    deadline = time.monotonic() + 5
    while victim in rc.ids and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim not in rc.ids

    # The forwarder of the second set, SIGKILLed: all its engines' work fails, they leave rc.ids.
    pending = [rc[e].apply_async(time.sleep, 30) for e in second]
    time.sleep(0.3)
    start = time.monotonic()
    (fwd_pid,) = set_pids(cluster.forwarder_sets[1])
    os.kill(fwd_pid, signal.SIGKILL)
    for e, ar in zip(second, pending):
        with pytest.raises(hpcpar.EngineError, match=f"engine {e}"):
            ar.get(timeout=15)
    assert time.monotonic() - start < 10  # within the heartbeat timeout (2 s here) and a margin
    deadline = time.monotonic() + 5
    while set(rc.ids) & set(second) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(rc.ids) == first[1:]
    assert rc[:].apply_sync(pow, 3, 2) == [9] * len(first[1:])
    assert rc.load_balanced_view().map_sync(abs, [-1, -2, -3]) == [1, 2, 3]


def test_two_level_tree(request, tmp_path):
    """controller <- forwarder a <- forwarder b; two engines below each forwarder."""
    cluster = hpcpar.cluster.Cluster(n=0, profile=f"fwd-tree-{os.getpid()}", cluster_id="", controller_args=FAST_HEARTBEAT)
    cluster.start_cluster_sync()
    request.addfinalizer(cluster.stop_cluster_sync)
    pd, procs = cluster.profile_dir, []

    def spawn(*args: str) -> None:
        log = open(tmp_path / f"p{len(procs)}.log", "wb")
        procs.append(subprocess.Popen(hpcpar_cmd(*args, "--profile-dir", str(pd.path)), stdout=log,
                                      stderr=subprocess.STDOUT))

    def stop_all() -> None:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    request.addfinalizer(stop_all)
    spawn("forwarder", "--name", "a")
    spawn("forwarder", "--name", "b", "--upstream", "a")
    for name in ("a", "a", "b", "b"):
        spawn("engine", "--file", str(forwarder_file(pd, "", name)))
    rc = hpcpar.Client(pd.client_file(), timeout=30)
    request.addfinalizer(rc.close)
    rc.wait_for_engines(4, timeout=60, interactive=False)
    engine_pids = {p.pid for p in procs[2:]}
    before = forwarding(rc)
    assert set(rc[:].apply_sync(os.getpid)) == engine_pids
    after = forwarding(rc)
    assert after["request_copies"] - before["request_copies"] == 1  # one copy, to forwarder a
    assert after["batched_replies"] - before["batched_replies"] == 4  # a's own batch + b's batch relayed
    depth = {f["name"]: (f["depth"], f["engines"]) for f in after["forwarders"]}
    assert depth == {"a": (1, 4), "b": (2, 2)}
    arr = np.arange(1000.0)
    rc[:].push({"x": arr}, block=True)
    assert all(np.array_equal(x, arr) for x in rc[:].pull("x", block=True))
    assert sorted(rc.load_balanced_view().map_sync(abs, range(-5, 0))) == [1, 2, 3, 4, 5]
    # The controller stopping tells engines and forwarders, through the tree.
    rc.close()
    cluster.stop_cluster_sync()
    for p in procs:
        p.wait(timeout=15)


def test_start_and_stop_leave_no_process(tmp_path):
    env = {**os.environ, "HPCPAR_DIR": str(tmp_path)}
    subprocess.run(hpcpar_cmd("start", "-n", "4", "--forwarders", "2", "--daemonize", "--wait"),
                   env=env, check=True, timeout=120, capture_output=True)
    cluster = hpcpar.cluster.Cluster.from_file(tmp_path / "profile_default" / "run" / "cluster.json")
    pids = set_pids(cluster.controller) | set().union(*(set_pids(s) for s in
                                                      [*cluster.engine_sets, *cluster.forwarder_sets]))
    assert len(pids) == 1 + 4 + 2
    assert len(cluster.forwarder_sets) == 2
    status = subprocess.run(hpcpar_cmd("status"), env=env, check=True, timeout=60, capture_output=True, text=True)
    assert status.stdout.count(" forwarder ") == 2, status.stdout
    subprocess.run(hpcpar_cmd("stop"), env=env, check=True, timeout=60, capture_output=True)
    deadline = time.monotonic() + 10
    while not all(gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in pids if not gone(p)] == []
    assert not list((tmp_path / "profile_default" / "security").glob("*forwarder*"))


def test_bad_forwarder_input_is_named(tmp_path):
    env = {**os.environ, "HPCPAR_DIR": str(tmp_path)}
    client_file = Path(tmp_path) / "client.json"
    client_file.write_text('{"key": "k", "urls": ["tcp://127.0.0.1:1"], "role": "client"}')
    r = subprocess.run(hpcpar_cmd("forwarder", "--file", str(client_file)), env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "needs the engine file" in r.stderr
    r = subprocess.run(hpcpar_cmd("start", "-n", "2", "--forwarders", "-1"), env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "--forwarders must be at least 0, not -1" in r.stderr  # a usage error
    r = subprocess.run(hpcpar_cmd("start", "-n", "2", "--forwarders", "1", "--engines", "slurm"), env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "hpcpar forwarder" in r.stderr


def test_engines_behind_forwarders_reattach_to_a_restored_controller(tmp_path):
    env = {**os.environ, "HPCPAR_DIR": str(tmp_path)}
    subprocess.run(hpcpar_cmd("start", "-n", "4", "--forwarders", "2", "--daemonize", "--wait"),
                   env=env, check=True, timeout=120, capture_output=True)
    try:
        client_file = tmp_path / "profile_default" / "security" / "hpcpar-client.json"
        with hpcpar.Client(client_file, timeout=20) as rc:
            pids = sorted(rc[:].apply_sync(os.getpid))
        ctl_pid = hpcpar.connection.ConnectionInfo.load(client_file).controller_pid
        os.kill(ctl_pid, signal.SIGKILL)
        while not gone(ctl_pid):
            time.sleep(0.05)
        subprocess.run(hpcpar_cmd("start", "--restore"), env=env, check=True, timeout=60, capture_output=True)
        with hpcpar.Client(client_file, timeout=20) as rc:
            rc.wait_for_engines(4, timeout=30, interactive=False)
            assert sorted(rc[:].apply_sync(os.getpid)) == pids  # the same engines, through the same forwarders
            assert sorted(f["engines"] for f in forwarding(rc)["forwarders"]) == [2, 2]
    finally:
        subprocess.run(hpcpar_cmd("stop"), env=env, timeout=60, capture_output=True)


def test_stopped_engine_behind_forwarder_is_declared_lost_then_comes_back(request):
    cluster, rc = start_cluster(2, f"fwd-stop-{os.getpid()}", forwarders=1)
    request.addfinalizer(cluster.stop_cluster_sync)
    request.addfinalizer(rc.close)
    pids = dict(zip(rc.ids, rc[:].apply_sync(os.getpid)))
    victim = rc.ids[0]
    check_stopped_engine_comes_back(rc, pids, victim)
