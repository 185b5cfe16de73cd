"""Transport security on real local clusters, in both modes (issue #15): keys, replays,
floods, stalled clients, file permissions. Flood sizes prove the point in seconds; the
big-number versions are in benchmarks/security_flood.py."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
import zmq
from cluster_helpers import start_cluster
from systems import CI_ENV, require_system

import hpcpar
import hpcpar.paths
from hpcpar import security, serialize, wire
from hpcpar.client import ConnectionRejected


def _append_line(path: str) -> None:
    with open(path, "a") as f:
        f.write("ran\n")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module", params=["curve", "hmac"])
def secure(request):
    mode = request.param
    cluster, rc = start_cluster(2, f"sec-{mode}-{os.getpid()}", ["--transport", mode])
    rc.close()
    yield mode, cluster
    cluster.stop_cluster_sync()


def _info(cluster) -> dict:
    return json.loads(cluster.profile_dir.client_file().read_text())


def _socket(info: dict, curve: dict | None = None, identity: bytes | None = None, login: bool = True) -> zmq.Socket:
    """A raw DEALER to the client port; ``curve``: the keys to present (None: none at all);
    ``identity``: the session replies go to; ``login``: in hmac mode, log in with the cluster's
    PLAIN token (as anyone holding the key, or reading the token off the wire, can)."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if identity is not None:  # also: it will not read, and takes as little as it can
        s.setsockopt(zmq.IDENTITY, identity)
        s.setsockopt(zmq.RCVHWM, 1)
        s.setsockopt(zmq.RCVBUF, 4096)
    if curve is not None:
        s.curve_serverkey = curve["curve_server_key"].encode()
        s.curve_publickey = curve["curve_public_key"].encode()
        s.curve_secretkey = curve["curve_secret_key"].encode()
    elif login and info["transport"] == "hmac":
        security.connect_as(s, info)
    s.connect(info["urls"][0])
    return s


def _apply_frames(key: str, marker: Path, **header) -> list:
    signer = wire.Signer(key.encode())
    payload, bufs = serialize.dumps((_append_line, (str(marker),), {}))
    return signer.pack(signer.header("apply_request", route="direct", targets=[0], **header), {}, payload, bufs)


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_files_are_private_and_carry_the_mode(secure):
    mode, cluster = secure
    pd = cluster.profile_dir
    info = _info(cluster)
    assert info["transport"] == mode
    assert stat.S_IMODE(pd.path.stat().st_mode) == 0o700
    for sub in (pd.security, pd.log, pd.run):
        assert stat.S_IMODE(sub.stat().st_mode) == 0o700
    private = [pd.client_file(), pd.engine_file(), *pd.path.glob("tasks*.db*"), *pd.log.glob("*.log")]
    assert any(p.name.startswith("tasks") for p in private) and any(p.suffix == ".log" for p in private)
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    key_file = pd.controller_key_file()
    if mode == "curve":
        assert all(len(info[k]) == 40 for k in ("curve_server_key", "curve_public_key", "curve_secret_key"))
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        # Clients never get the server's secret key; engines have a key pair of their own.
        server = json.loads(key_file.read_text())
        engine = json.loads(pd.engine_file().read_text())
        assert server["server_secret"] not in pd.client_file().read_text()
        assert engine["curve_public_key"] != info["curve_public_key"]
    else:
        assert not key_file.exists()
    # The key is not on any process's command line.
    pid = info["controller_pid"]
    assert info["key"].encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_wrong_key_client_is_rejected_and_runs_nothing(secure, tmp_path):
    mode, cluster = secure
    marker = tmp_path / "ran"
    info = _info(cluster)
    wrong = dict(info)
    if mode == "curve":
        public, secret = zmq.curve_keypair()
        wrong.update(curve_public_key=public.decode(), curve_secret_key=secret.decode())
    else:
        wrong["key"] = "1" * 64
    started = time.monotonic()
    with pytest.raises(ConnectionRejected, match="does not match the running cluster"):
        hpcpar.Client(wrong, timeout=20)
    assert time.monotonic() - started < 20  # rejected, not timed out (timeout is 20 s)
    # A forged request with the right HMAC key but without the cluster's Curve keys (curve), or
    # signed with a wrong key (hmac): nothing runs.
    s = _socket(info, curve=None)
    s.send_multipart(_apply_frames(info["key"] if mode == "curve" else "1" * 64, marker))
    if mode == "curve":
        s2 = _socket(info, curve=wrong)
        s2.send_multipart(_apply_frames(info["key"], marker))
    time.sleep(1.0)
    with hpcpar.Client(info, timeout=30) as good:
        assert good[0].apply_sync(pow, 2, 5) == 32
    assert not marker.exists()


def test_client_left_open_across_a_restart_gets_connection_rejected(tmp_path):
    """The cluster is stopped and started again on the same ports (new keys): the old client's
    next call fails within seconds with ConnectionRejected (the refused CurveZMQ handshake)."""
    profile = f"sec-restart-{os.getpid()}"
    cluster, rc = start_cluster(1, profile, ["--transport", "curve"])
    try:
        info = json.loads(cluster.profile_dir.client_file().read_text())
        engine_info = json.loads(cluster.profile_dir.engine_file().read_text())
        port = int(info["urls"][0].rsplit(":", 1)[1])
        engine_port = int(engine_info["urls"][0].rsplit(":", 1)[1])
        rc.close()
        rc = hpcpar.Client(info, timeout=30)  # ours: the Cluster closes the clients it made when it stops
        assert rc[0].apply_sync(int, 7) == 7
        cluster.stop_cluster_sync()
        cluster, rc2 = start_cluster(1, profile, ["--transport", "curve", "--port", str(port),
                                                  "--engine-port", str(engine_port)])
        rc2.close()
        started = time.monotonic()
        with pytest.raises(ConnectionRejected, match="does not match the running cluster"):
            rc.queue_status()
        assert time.monotonic() - started < 30
    finally:
        rc.close()
        cluster.stop_cluster_sync()


def test_replays_are_dropped(secure, tmp_path):
    """A message sent twice, a copy read from the task database and an old one: each runs once or never."""
    mode, cluster = secure
    info = _info(cluster)
    marker = tmp_path / "ran"
    keys = info if mode == "curve" else None
    s = _socket(info, keys)
    frames = _apply_frames(info["key"], marker)
    s.send_multipart(frames)
    s.send_multipart(frames)  # the same signed frames again
    old = _apply_frames(info["key"], marker, date=time.time() - 3600)
    s.send_multipart(old)
    deadline = time.monotonic() + 30
    while _lines(marker) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Frames read from the task database, as another user would try (if the file were readable).
    with hpcpar.Client(info, timeout=30) as rc:
        ar = rc[0].apply_async(_append_line, str(marker))
        ar.get(timeout=30)
    db = next(cluster.profile_dir.path.glob("tasks*.db"))
    deadline = time.monotonic() + 20
    stored: list = []
    while not stored and time.monotonic() < deadline:
        stored = _stored_requests(db)
        time.sleep(0.2)
    assert stored, "no stored request to replay"
    for request in stored:
        s.send_multipart(request)
    time.sleep(1.5)
    s.close()
    assert _lines(marker) == 2  # the first send and the client's own call, nothing else


def _stored_requests(db: Path) -> list[list[bytes]]:
    from hpcpar.controller.taskdb import open_backend

    backend = open_backend("sqlite", db)
    try:
        return [r["request"] for r in backend.find({}, ["request"]) if r.get("request")]
    finally:
        backend.close()


def test_unauthenticated_flood_leaves_the_controller_serving_and_small(secure):
    """Garbage, bad signatures, truncated messages at both ports: nothing is delivered (curve) or
    run (hmac), the cluster serves afterwards and the controller's memory comes back."""
    mode, cluster = secure
    info = _info(cluster)
    pid = info["controller_pid"]
    engine_url = json.loads(cluster.profile_dir.engine_file().read_text())["urls"][0]
    with hpcpar.Client(info, timeout=30) as rc:
        rc[0].apply_sync(int)
        before = _rss(pid)
        ctx = zmq.Context.instance()
        for url in (info["urls"][0], engine_url):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 0)
            if mode == "hmac":  # logged in (the PLAIN token read off the wire): the frames reach verification
                security.connect_as(s, info)
            s.connect(url)
            for i in range(20_000):
                kind = i % 4
                if kind == 0:
                    _flood(s, [os.urandom(64)])
                elif kind == 1:
                    _flood(s, [os.urandom(32), b'{"msg_type":"apply_request"}', b"{}", os.urandom(512)])
                elif kind == 2:
                    _flood(s, [b"x", b"y"])
                else:
                    _flood(s, [os.urandom(32)] * 6)
            _flood(s, [os.urandom(32), b"{}", b"{}", b"z" * (64 << 20)])  # one 64 MB frame
            time.sleep(2.0)
            s.close()
        # It still serves, and its memory came back.
        assert rc[:].apply_sync(pow, 3, 2) == [9, 9]
        deadline = time.monotonic() + 30
        while _rss(pid) - before > (20 << 20) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _rss(pid) - before <= (20 << 20), f"controller grew by {(_rss(pid) - before) >> 20} MB"


def test_peer_without_the_key_cannot_make_the_controller_buffer_anything(secure):
    """A peer that does not hold the cluster's key (hmac: no PLAIN token; curve: no keys) sends a
    256 MB frame (benchmarks/security.py flood: 1 GB) to both ports: the handshake never completes,
    so the controller buffers none of it, and no engine is declared dead meanwhile."""
    mode, cluster = secure
    info = _info(cluster)
    pid = info["controller_pid"]
    engine_url = json.loads(cluster.profile_dir.engine_file().read_text())["urls"][0]
    with hpcpar.Client(info, timeout=30) as rc:
        ids = sorted(rc.ids)
        rc[:].apply_sync(int)
        before = peak = _rss(pid)
        ctx = zmq.Context.instance()
        big = b"z" * (256 << 20)
        socks = []
        for url in (info["urls"][0], engine_url):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 0)
            monitor = s.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            s.connect(url)
            s.send_multipart([os.urandom(32), b'{"msg_type":"apply_request"}', b"{}", big], copy=False)
            socks.append((s, monitor))
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            peak = max(peak, _rss(pid))
            time.sleep(0.05)
        for s, monitor in socks:
            assert not monitor.poll(0), "a peer without the key completed a handshake"
            s.disable_monitor()
            monitor.close(linger=0)
            s.close(linger=0)
        assert peak - before < (20 << 20), f"the controller grew by {(peak - before) >> 20} MB"
        assert sorted(rc.ids) == ids
        assert rc[:].apply_sync(pow, 2, 3) == [8] * len(ids)


def _flood(s: zmq.Socket, frames: list) -> None:
    """Send if the socket takes it (in curve mode it never connects: nothing to send to)."""
    try:
        s.send_multipart(frames, zmq.NOBLOCK)
    except zmq.Again:
        pass


def _big_result(n: int) -> bytes:
    return b"r" * n


def test_stalled_client_does_not_grow_the_controller(secure):
    """A client that stops reading while 200 MB of results are sent to it: the controller holds at
    most its queue (32 messages), its backlog (32 MB) and the task database's lag (16 MB), not
    the 200 MB; the results stay retrievable by id from another client."""
    mode, cluster = secure
    info = _info(cluster)
    pid = info["controller_pid"]
    with hpcpar.Client(info, timeout=30) as rc:
        rc[0].apply_sync(int)
    before = _rss(pid)
    # A raw client that submits and never reads (its receive queue is one message).
    keys = info if mode == "curve" else None
    signer = wire.Signer(info["key"].encode())
    s = _socket(info, keys, identity=signer.session.encode())  # replies come to this socket, unread
    msg_ids = []
    payload, bufs = serialize.dumps((_big_result, (512 << 10,), {}))
    for _ in range(400):
        hdr = signer.header("apply_request", route="lb")
        msg_ids.append(hdr["msg_id"])
        s.send_multipart(signer.pack(hdr, {}, payload, bufs))
    with hpcpar.Client(info, timeout=60) as other:
        # Every task finishes; meanwhile others are served as usual.
        assert other[:].apply_sync(int, 5) == [5, 5]
        deadline = time.monotonic() + 100
        peak = 0
        while time.monotonic() < deadline:
            peak = max(peak, _rss(pid))
            status = other.result_status(msg_ids)
            if not status["pending"]:
                break
            time.sleep(0.5)
        assert not status["pending"]
        grown = max(peak, _rss(pid)) - before
        assert grown < (150 << 20), f"controller grew by {grown >> 20} MB for a stalled client"
        results = other.get_result(msg_ids[-3:], block=False).get(timeout=60)
        assert [len(r) for r in results] == [512 << 10] * 3
    s.close()


def test_curve_cluster_restores_and_serves_through_forwarders(tmp_path):
    """curve end to end with a forwarder between engines and controller, then a controller
    SIGKILL and `hpcpar start --restore`: the same keys, the open client and the engines carry on."""
    import signal
    import subprocess

    from cluster_helpers import hpcpar_cmd

    profile = f"sec-restore-{os.getpid()}"
    env = {**os.environ, "HPCPAR_SECURITY_TRANSPORT": "curve"}
    out = subprocess.run(hpcpar_cmd("start", "--profile", profile, "-n", "2", "--forwarders", "1",
                                    "--daemonize", "--wait"), capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    try:
        pd = hpcpar.paths.ProfileDir.for_profile(profile)
        info = json.loads(pd.client_file().read_text())
        assert info["transport"] == "curve"
        forwarder_files = list(pd.security.glob("hpcpar*-forwarder-*.json"))
        assert forwarder_files, "no forwarder connection file"
        fwd = json.loads(forwarder_files[0].read_text())
        # The forwarder serves its engines with a server key of its own, and their own key pair.
        assert fwd["transport"] == "curve" and fwd["curve_server_key"] != info["curve_server_key"]
        rc = hpcpar.Client(profile=profile, timeout=30)
        rc.wait_for_engines(2, timeout=60, interactive=False)
        assert rc[:].apply_sync(pow, 2, 4) == [16, 16]
        os.kill(info["controller_pid"], signal.SIGKILL)
        time.sleep(0.5)
        out = subprocess.run(hpcpar_cmd("start", "--profile", profile, "--restore"),
                             capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stderr
        assert json.loads(pd.client_file().read_text())["curve_server_key"] == info["curve_server_key"]
        deadline = time.monotonic() + 60
        while sorted(rc.ids) != [0, 1] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rc[:].apply_sync(pow, 3, 2) == [9, 9]  # the same client, on the restored controller
        rc.close()
    finally:
        subprocess.run(hpcpar_cmd("stop", "--profile", profile), timeout=60, env=env)


def test_plain_start_refuses_over_live_engines_of_a_dead_controller():
    """A controller SIGKILLed while its engines live: plain `hpcpar start` names --restore and
    leaves them running; --force stops them and starts afresh."""
    import signal
    import subprocess

    from cluster_helpers import hpcpar_cmd

    from hpcpar.launchers.process import process_start_time

    profile = f"sec-orphans-{os.getpid()}"
    start = hpcpar_cmd("start", "--profile", profile, "-n", "1", "--daemonize", "--wait")
    out = subprocess.run(start, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    try:
        pd = hpcpar.paths.ProfileDir.for_profile(profile)
        info = json.loads(pd.client_file().read_text())
        with hpcpar.Client(profile=profile, timeout=30) as rc:
            engine_pid = rc[0].apply_sync(os.getpid)
        os.kill(info["controller_pid"], signal.SIGKILL)
        time.sleep(0.5)
        out = subprocess.run(start, capture_output=True, text=True, timeout=120)
        assert out.returncode != 0
        assert "--restore" in out.stderr and "--force" in out.stderr, out.stderr
        assert process_start_time(engine_pid) is not None, "the refused start killed the live engine"
        out = subprocess.run([*start, "--force"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        deadline = time.monotonic() + 30
        while process_start_time(engine_pid) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert process_start_time(engine_pid) is None, "--force left the old engine running"
        with hpcpar.Client(profile=profile, timeout=30) as rc:
            assert rc[0].apply_sync(os.getpid) != engine_pid
    finally:
        subprocess.run(hpcpar_cmd("stop", "--profile", profile), timeout=60)


def test_client_of_a_dead_controller_says_so_at_once():
    """The connection file names a controller of this host that is gone: Client() says how to
    restore it at once, not after its timeout."""
    import socket
    import subprocess
    import sys

    with subprocess.Popen([sys.executable, "-c", "pass"]) as p:
        p.wait()
    info = {"key": "0" * 64, "urls": ["tcp://127.0.0.1:9"], "role": "client", "profile": "gone",
            "location": socket.gethostname(), "controller_pid": p.pid}
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="--restore"):
        hpcpar.Client(info, timeout=30)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("secure", ["curve"], indirect=True)
def test_engine_with_stale_curve_keys_fails_fast(secure, tmp_path):
    """An engine started with keys the controller does not know: a clear error within seconds
    (curve; in hmac mode the controller answers a bad signature, see the engine's registration)."""
    import subprocess
    import sys

    _, cluster = secure
    engine = json.loads(cluster.profile_dir.engine_file().read_text())
    public, secret = zmq.curve_keypair()
    engine.update(curve_public_key=public.decode(), curve_secret_key=secret.decode())
    path = tmp_path / "stale-engine.json"
    path.write_text(json.dumps(engine))
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "hpcpar", "engine", "--file", str(path), "--connect-timeout", "60"],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode != 0
    assert "refused this engine" in out.stderr and "stale" in out.stderr, out.stderr[-2000:]
    assert time.monotonic() - started < 45


def test_bound_kernel_of_a_curve_cluster_stays_on_loopback(tmp_path):
    """bind_kernel in a curve cluster: 127.0.0.1 by default; an address beyond loopback is refused
    (the Jupyter protocol cannot encrypt) with the SSH way named, unless allow_clear=True."""
    pytest.importorskip("IPython")
    jupyter_client = pytest.importorskip("jupyter_client")
    require_system("netns")
    head = CI_ENV.get("HPCPAR_NETNS_HEAD_ADDR", "10.200.0.1")  # this host's address on the netns bridge
    runtime = tmp_path / "runtime"
    cluster, rc = start_cluster(1, f"sec-kernel-{os.getpid()}", ["--transport", "curve"],
                                env={"JUPYTER_RUNTIME_DIR": str(runtime)})
    try:
        with pytest.raises(hpcpar.RemoteError, match=r"transport curve.*--ssh .*allow_clear=True"):
            rc[0].apply_sync(hpcpar.bind_kernel, head)
        assert not list(runtime.glob("kernel-*.json"))  # nothing was bound
        path = rc[0].apply_sync(hpcpar.bind_kernel)
        assert json.loads(Path(path).read_text())["ip"] == "127.0.0.1"
        kc = jupyter_client.BlockingKernelClient(connection_file=path)
        kc.load_connection_file()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=30)
            reply = kc.execute_interactive("41 + 1", timeout=30)
            assert reply["content"]["status"] == "ok"
            kc.shutdown()  # unbinds; the engine goes on
        finally:
            kc.stop_channels()
        deadline = time.monotonic() + 30
        while Path(path).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        # Said explicitly: on the trusted bridge address it binds there.
        path = rc[0].apply_sync(hpcpar.bind_kernel, head, allow_clear=True)
        assert json.loads(Path(path).read_text())["ip"] == head
    finally:
        rc.close()
        cluster.stop_cluster_sync()
