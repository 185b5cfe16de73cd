"""What must not break: dead engines, wrong keys, garbage on the wire, stopping."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import zmq

import hpcpar
from hpcpar import security
from hpcpar.launchers.process import process_start_time


def engine_pids(rc):
    return dict(zip(rc.ids, rc[:].apply_sync(os.getpid)))


def test_sigkilled_engine_fails_its_task_and_others_keep_serving(private_cluster):
    cluster, rc = private_cluster
    pids = engine_pids(rc)
    victim = rc.ids[0]
    ar = rc[victim].apply_async(time.sleep, 30)
    queued = rc[victim].apply_async(pow, 2, 2)
    time.sleep(0.3)
    os.kill(pids[victim], signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(hpcpar.EngineError, match=f"engine {victim}"):
        ar.get(timeout=20)
    assert time.monotonic() - start < 10  # noticed within a few seconds
    with pytest.raises(hpcpar.EngineError):
        queued.get(timeout=5)
    deadline = time.monotonic() + 5
    while victim in rc.ids and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim not in rc.ids
    survivor = rc.ids[0]
    assert rc[survivor].apply_sync(pow, 3, 3) == 27
    assert rc.load_balanced_view().map_sync(abs, [-1, -2, -3]) == [1, 2, 3]


def test_client_with_wrong_key_executes_nothing(cluster, tmp_path):
    marker = tmp_path / "should-not-exist"
    info = json.loads(cluster.profile_dir.client_file().read_text())
    info["key"] = "0" * 64
    with pytest.raises(hpcpar.client.ConnectionRejected, match="does not match the running cluster"):
        hpcpar.Client(info, timeout=5)

    # Bypass the client's own checks: a forged apply_request signed with the wrong key.
    from hpcpar import serialize, wire

    signer = wire.Signer(b"0" * 64)
    payload, bufs = serialize.dumps((open, (str(marker), "w"), {}))
    hdr = signer.header("apply_request", route="direct", targets=[0])
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.connect(info["urls"][0])
    s.send_multipart(signer.pack(hdr, {}, payload, bufs))
    time.sleep(0.5)
    s.close(linger=0)
    assert not marker.exists()
    with hpcpar.Client(profile="shared") as good:
        assert good[0].apply_sync(pow, 2, 5) == 32


@pytest.mark.parametrize("targets, why", [([[3, 1]], "first <= last"), ([0, 0], "engine 0 twice"),
                                          (None, "non-empty list"), (["all"], "engine id")])
def test_malformed_direct_request_gets_a_clear_error(rc, targets, why):
    """A signed request the client itself would not build: the controller says what is wrong,
    and the client fails each part it waits for with that error."""
    from hpcpar import targetset
    from hpcpar.client.asyncresult import AsyncResult

    header = rc._signer.header("apply_request", route="direct", targets=targets)
    msg_ids = [targetset.task_id(header["msg_id"], e) for e in (0, 1)]
    ar = AsyncResult(rc, msg_ids, fname="apply", targets=[0, 1])
    rc._send_tracked(msg_ids, rc._signer.pack(header, {}, b""), header, ar, [0, 1])
    assert ar.wait(timeout=20), "the refusal did not reach the waiting AsyncResult"
    for mid in msg_ids:
        error = rc.metadata[mid]["error"]
        assert error["ename"] == "ValueError"
        assert "malformed direct request" in error["evalue"] and why in error["evalue"]
    assert rc[:].apply_sync(int) == [0] * 4  # and it goes on serving


@pytest.mark.parametrize("port_kind", ["client", "engine"])
def test_garbage_truncated_and_oversized_frames_leave_controller_serving(cluster, port_kind):
    path = cluster.profile_dir.client_file() if port_kind == "client" else cluster.profile_dir.engine_file()
    info = json.loads(path.read_text())
    url = info["urls"][0]
    host, port = url[len("tcp://"):].rsplit(":", 1)
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    security.connect_as(s, info)  # logged in (as one who read the PLAIN token off the wire): frames get through
    s.connect(url)
    s.send(b"")  # empty
    s.send_multipart([b"x"])  # too few frames
    s.send_multipart([b"sig", b"{not json", b"{}", b""])  # bad signature and bad JSON
    s.send_multipart([b"\x00" * 32, b"[]", b"{}", b""])  # header not an object
    s.send_multipart([os.urandom(32)] * 9)  # random frames
    s.send_multipart([b"a" * 32, b"b" * (64 << 20), b"{}", b""])  # a 64 MB frame
    s.close()
    # Raw TCP garbage that is not even ZMTP.
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        try:
            raw.sendall(os.urandom(4096))
            raw.sendall(b"\xff" + b"\x00" * 8 + b"\x7f")  # a truncated greeting
        except (ConnectionResetError, BrokenPipeError):
            pass  # the controller hung up on the garbage (curve mode does at once): as good
    time.sleep(0.3)
    with hpcpar.Client(profile="shared") as good:
        assert good.ids == [0, 1, 2, 3]
        assert good[:].apply_sync(pow, 2, 3) == [8, 8, 8, 8]


def test_engine_start_does_not_import_numpy_or_ipython(private_cluster):
    _, rc = private_cluster

    def imported():
        import sys
        return sorted(m for m in ("numpy", "IPython", "ipykernel", "jinja2", "paramiko") if m in sys.modules)

    assert rc[:].apply_sync(imported) == [[], []]


def test_hpcpar_stop_leaves_no_process(hpcpar_dir):
    from cluster_helpers import hpcpar_cmd

    out = subprocess.run(hpcpar_cmd("start", "--profile", "stopper", "-n", "8", "--daemonize", "--wait"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with hpcpar.Client(profile="stopper") as rc:
        pids = rc[:].apply_sync(os.getpid)
        controller_pid = json.loads((hpcpar_dir / "profile_stopper/security/hpcpar-client.json").read_text())["controller_pid"]
    start = time.monotonic()
    stop = subprocess.run(hpcpar_cmd("stop", "--profile", "stopper"), capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - start
    assert stop.returncode == 0, stop.stderr
    assert all(process_start_time(p) is None for p in [*pids, controller_pid])
    assert not (hpcpar_dir / "profile_stopper/run/cluster.json").exists()
    assert not (hpcpar_dir / "profile_stopper/security/hpcpar-client.json").exists()
    assert elapsed < 10
    again = subprocess.run(hpcpar_cmd("stop", "--profile", "stopper"), capture_output=True, text=True, timeout=30)
    assert again.returncode == 1 and "no cluster to stop" in again.stderr


def test_foreground_start_stops_everything_on_ctrl_c(hpcpar_dir):
    from cluster_helpers import hpcpar_cmd

    proc = subprocess.Popen(hpcpar_cmd("start", "--profile", "fg", "-n", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "cluster ready" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
        assert "cluster ready" in line
        with hpcpar.Client(profile="fg") as rc:
            pids = rc[:].apply_sync(os.getpid)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert all(process_start_time(p) is None for p in pids)


def test_two_profiles_run_side_by_side(hpcpar_dir):
    import hpcpar.cluster

    a = hpcpar.cluster.Cluster(n=1, profile="side-a", cluster_id="")
    b = hpcpar.cluster.Cluster(n=1, profile="side-b", cluster_id="")
    try:
        a.start_cluster_sync()
        b.start_cluster_sync()
        ra = a.wait_for_engines_sync(timeout=60, interactive=False)
        rb = b.wait_for_engines_sync(timeout=60, interactive=False)
        ra[:].push({"who": "a"}, block=True)
        rb[:].push({"who": "b"}, block=True)
        assert ra[:].pull("who", block=True) == ["a"]
        assert rb[:].pull("who", block=True) == ["b"]
        assert ra[0].apply_sync(os.getpid) != rb[0].apply_sync(os.getpid)
        listing = subprocess.run([sys.executable, "-m", "hpcpar", "list", "--json"],
                                 capture_output=True, text=True, timeout=30)
        profiles = {row["profile"] for row in json.loads(listing.stdout)}
        assert {"side-a", "side-b"} <= profiles
        a.stop_cluster_sync()
        assert rb[0].apply_sync(pow, 2, 2) == 4  # stopping one leaves the other alone
    finally:
        a.stop_cluster_sync()
        b.stop_cluster_sync()


def test_second_start_in_same_profile_is_refused(hpcpar_dir):
    from cluster_helpers import hpcpar_cmd

    first = subprocess.run(hpcpar_cmd("start", "--profile", "dup", "-n", "1", "--daemonize"),
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    try:
        second = subprocess.run(hpcpar_cmd("start", "--profile", "dup", "-n", "1", "--daemonize"),
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "already running" in second.stderr and "hpcpar stop --profile dup" in second.stderr
    finally:
        subprocess.run(hpcpar_cmd("stop", "--profile", "dup"), timeout=60)


def test_controller_and_engines_run_standalone(tmp_path):
    """What launchers on other hosts do: `hpcpar controller` and `hpcpar engine --file`."""
    from cluster_helpers import hpcpar_cmd

    pdir = tmp_path / "standalone"
    ctl = subprocess.Popen(hpcpar_cmd("controller", "--profile-dir", str(pdir), "--heartbeat-interval", "0.25",
                                      "--heartbeat-timeout", "2"), stderr=subprocess.DEVNULL)
    engines = []
    try:
        client_file = pdir / "security" / "hpcpar-client.json"
        engine_file = pdir / "security" / "hpcpar-engine.json"
        deadline = time.monotonic() + 30
        while not engine_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for f in (engine_file, client_file):  # either file is enough for an engine
            engines.append(subprocess.Popen(hpcpar_cmd("engine", "--file", str(f)), stderr=subprocess.DEVNULL))
        env_engine = dict(os.environ, HPCPAR_CONNECTION_INFO=engine_file.read_text())
        engines.append(subprocess.Popen(hpcpar_cmd("engine"), env=env_engine, cwd=tmp_path,
                                        stderr=subprocess.DEVNULL))
        with hpcpar.Client(client_file) as rc:
            rc.wait_for_engines(3, timeout=30, interactive=False)
            assert sorted(rc[:].apply_sync(os.getpid)) == sorted(p.pid for p in engines)
            rc.shutdown(targets=[rc.ids[0]], block=True)
            deadline = time.monotonic() + 10
            while len(rc.ids) > 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(rc.ids) == 2
            rc.shutdown(hub=True)
        assert ctl.wait(timeout=15) == 0
        for p in engines:
            assert p.wait(timeout=15) == 0
        assert not client_file.exists() and not engine_file.exists()
    finally:
        for p in [ctl, *engines]:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_engine_with_wrong_key_is_told_why(cluster, tmp_path):
    from cluster_helpers import hpcpar_cmd

    info = json.loads(cluster.profile_dir.engine_file().read_text())
    info["key"] = "1" * 64
    bad = tmp_path / "engine.json"
    bad.write_text(json.dumps(info))
    out = subprocess.run(hpcpar_cmd("engine", "--file", str(bad), "--connect-timeout", "5"),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "not with this cluster's key" in out.stderr or "stale" in out.stderr


def test_controller_advertises_the_configured_location_first(tmp_path):
    from cluster_helpers import hpcpar_cmd

    pdir = tmp_path / "located"
    ctl = subprocess.Popen(hpcpar_cmd("controller", "--profile-dir", str(pdir), "--ip", "*", "--location", "localhost"),
                           stderr=subprocess.DEVNULL)
    try:
        client_file = pdir / "security" / "hpcpar-client.json"
        deadline = time.monotonic() + 30
        while not client_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        urls = json.loads(client_file.read_text())["urls"]
        assert urls[0].startswith("tcp://localhost:") and "tcp://127.0.0.1:" in urls[-1]
        with hpcpar.Client(client_file, timeout=10) as rc:  # connects through the advertised name
            assert rc.ids == []
    finally:
        ctl.terminate()
        ctl.wait(timeout=20)


def test_an_engine_declared_lost_while_alive_comes_back(private_cluster):
    """A stopped (not dead) engine misses its heartbeats: its work fails with
    EngineError, and once it runs again it re-registers with its id and serves."""
    cluster, rc = private_cluster
    pids = engine_pids(rc)
    victim = rc.ids[0]
    from cluster_helpers import check_stopped_engine_comes_back

    check_stopped_engine_comes_back(rc, pids, victim)
