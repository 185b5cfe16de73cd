"""Buffer frames (zero-copy array data) are covered by the signature in HMAC mode.

A byte-rewriting TCP proxy between a client and the controller stands for a man in
the middle on an HMAC-mode network (ZMTP over plain TCP): altered array data must
never reach user code, and the user gets an explicit error for that task. (Small
objects and bytearrays travel inside the pickled payload, which the signature always
covered; numpy arrays of 1 KB and more travel as separate buffer frames.)"""

from __future__ import annotations

import json
import os
import socket
import threading

import numpy as np
import pytest

from hpcpar import wire


def _signed(transport: str = "hmac") -> tuple[wire.Signer, list]:
    signer = wire.Signer(os.urandom(32), transport)
    bufs = [os.urandom(4096), bytearray(os.urandom(2048)), memoryview(os.urandom(1500))]
    return signer, signer.pack(signer.header("apply_request"), {"a": 1}, b"payload", bufs)


def test_intact_buffers_verify_and_come_back_unchanged():
    signer, frames = _signed()
    msg = signer.unpack(frames)
    assert [bytes(b) for b in msg.buffers] == [bytes(f) for f in frames[4:]]
    assert len(msg.header["bufs"]) == 3


@pytest.mark.parametrize("change", ["flip", "add", "drop", "swap", "truncate", "drop-all"])
def test_a_changed_added_dropped_or_reordered_buffer_is_bad(change):
    signer, frames = _signed()
    frames = [bytes(f) for f in frames]
    if change == "flip":
        b = bytearray(frames[5])
        b[1000] ^= 1
        frames[5] = bytes(b)
    elif change == "add":
        frames.append(b"x" * 2000)
    elif change == "drop":
        del frames[5]
    elif change == "swap":
        frames[4], frames[5] = frames[5], frames[4]
    elif change == "truncate":
        frames[6] = frames[6][:-1]
    else:
        frames = frames[:4]
    with pytest.raises(wire.BadBuffers, match="altered in transit|added or dropped") as info:
        signer.unpack(frames)
    assert info.value.message.msg_type == "apply_request"  # the authentic header, to answer with an error
    # A hop that forwards buffers unread (controller, forwarder) lets the reader decide.
    assert signer.unpack(frames, check_buffers=False).msg_type == "apply_request"


def test_buffers_without_digests_are_refused_with_the_reason():
    """A sender that does not sign its buffers (an older hpcpar) gets a clear error in HMAC mode."""
    key = os.urandom(32)
    curve, hmac_mode = wire.Signer(key, "curve"), wire.Signer(key, "hmac")
    frames = curve.pack(curve.header("apply_request"), {}, b"p", [b"d" * 4096])
    assert "bufs" not in json.loads(frames[1])  # curve: the transport authenticates every frame
    assert curve.unpack(frames).buffers
    with pytest.raises(wire.BadBuffers, match="not covered by the signature"):
        hmac_mode.unpack(frames)


def test_small_messages_carry_no_digests():
    signer = wire.Signer(os.urandom(32))
    frames = signer.pack(signer.header("apply_request"), {}, b"p")
    assert len(frames) == 4 and b"bufs" not in frames[1]


def test_nested_messages_are_verified_one_by_one():
    signer = wire.Signer(os.urandom(32))
    inner = signer.pack(signer.header("apply_reply"), {}, b"r", [b"z" * 3000])
    outer = signer.pack(signer.header("coalesced_reply", counts=[len(inner)]), {}, b"", inner, nested=True)
    msg = signer.unpack(outer)
    tampered = [bytes(f) for f in msg.buffers]
    tampered[4] = b"y" + tampered[4][1:]
    with pytest.raises(wire.BadBuffers):
        signer.unpack(tampered)


def test_a_refusal_notice_names_the_task_the_untrusted_header_names():
    from hpcpar.engine.refusal import Refusals

    signer = wire.Signer(os.urandom(32))
    refusals = Refusals()

    def notice(msg_type: str, **extra):
        frames = signer.pack(signer.header(msg_type, **extra), {}, b"payload")
        frames[3] = b"altered"
        with pytest.raises(wire.BadMessage) as e:
            signer.unpack(frames)
        return frames[1], refusals.notice(frames, 7, str(e.value))

    header, direct = notice("apply_request", route="direct")
    base = json.loads(header)["msg_id"]
    assert direct == [wire.REFUSED, f"{base}-7".encode(), b"bad signature (wrong cluster key?)"]
    header, balanced = notice("execute_request")
    assert balanced[1] == json.loads(header)["msg_id"].encode()
    assert notice("heartbeat_reply")[1] is None and notice("abort_request")[1] is None
    assert refusals.notice([b"sig", b"not json", b"{}", b""], 7, "bad signature") is None
    assert refusals.count == 5


# -- end to end, through a byte-rewriting proxy ---------------------------------------------------

MARK = b"hpcpar-intact-16"  # 16 bytes; the array data is this, repeated
EVIL = b"hpcpar-ALTERED!!"


class RewritingProxy:
    """A TCP proxy on loopback that, while ``tamper`` names a direction ("up": towards the
    controller, "down": towards the client), rewrites MARK to EVIL in the bytes it passes."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.tamper: str | None = None
        self.rewrites = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.target, timeout=10)
            up.settimeout(None)
            self.sockets += [conn, up]
            threading.Thread(target=self._pump, args=(conn, up, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, conn, "down"), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        try:
            while data := src.recv(1 << 16):
                if self.tamper == direction and MARK in data:
                    self.rewrites += data.count(MARK)
                    data = data.replace(MARK, EVIL)  # whole occurrences inside this read: enough
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        for s in self.sockets:
            s.close()


@pytest.fixture(scope="module")
def hmac_cluster():
    from cluster_helpers import start_cluster

    cluster, rc = start_cluster(2, f"bufsign-{os.getpid()}", ["--transport", "hmac"])
    rc.close()
    yield cluster
    cluster.stop_cluster_sync()


@pytest.fixture(scope="module")
def proxied(hmac_cluster, tmp_path_factory):
    """An HMAC-mode cluster of two engines, and a client that reaches it only through the proxy
    (no shared memory: large buffers travel as frames)."""
    import hpcpar

    cluster = hmac_cluster
    info = json.loads(cluster.profile_dir.client_file().read_text())
    assert info["transport"] == "hmac"
    host, port = info["urls"][0].removeprefix("tcp://").rsplit(":", 1)
    proxy = RewritingProxy((host, int(port)))
    info["urls"] = [f"tcp://127.0.0.1:{proxy.port}"]
    path = tmp_path_factory.mktemp("bufsign") / "client.json"
    path.write_text(json.dumps(info))
    path.chmod(0o600)
    client = hpcpar.Client(url_file=str(path), shared_memory=False, timeout=30)
    client.wait_for_engines(2, timeout=30, interactive=False)
    yield client, proxy
    client.close()
    proxy.close()


def _data(n: int = 20_000) -> np.ndarray:
    return np.frombuffer(MARK * n, dtype=np.uint8).copy()


def test_altered_push_and_apply_data_never_reach_the_engine(proxied):
    import hpcpar

    rc, proxy = proxied
    view = rc[0]
    good = _data()
    proxy.tamper = None
    view.push({"a": good, "b": good.view("<f8")}, block=False).get(timeout=30)  # unaltered: works
    a, b = view.pull(["a", "b"], block=False).get(timeout=30)
    assert a.tobytes() == b.tobytes() == MARK * 20_000

    proxy.tamper = "up"
    pushed = view.push({"a": np.zeros(50_000, np.uint8), "b": _data().view("<f8")}, block=False)
    with pytest.raises(hpcpar.RemoteError) as push_err:
        pushed.get(timeout=30)
    assert push_err.value.ename == "MessageIntegrityError"
    assert "altered in transit" in push_err.value.evalue and "was not run" in push_err.value.evalue
    bad_apply = view.apply_async(lambda x: x.tobytes().count(b"ALTERED"), _data())
    with pytest.raises(hpcpar.RemoteError) as apply_err:
        bad_apply.get(timeout=30)
    assert apply_err.value.ename == "MessageIntegrityError"
    # A bytearray travels inside the pickled payload: the controller refuses the request as a bad
    # signature and names it to the client, whose task fails at once (not a silent time-out).
    with pytest.raises(hpcpar.RemoteError) as payload_err:
        view.push({"e": bytearray(MARK * 1000)}, block=False).get(timeout=30)
    assert payload_err.value.ename == "MessageIntegrityError"
    assert "refused request" in payload_err.value.evalue and "bad signature" in payload_err.value.evalue
    assert proxy.rewrites > 0
    # The controller stores requests unread; the hub does not hand their altered data out either.
    with pytest.raises(ValueError, match="altered in transit"):
        rc.db_query({"msg_id": pushed.msg_ids[0]}, keys=["buffers"])

    proxy.tamper = None  # the engine's namespace still holds the first, unaltered push
    a, b = view.pull(["a", "b"], block=False).get(timeout=30)
    assert a.tobytes() == b.tobytes() == MARK * 20_000
    good_apply = view.apply_async(lambda x: x.tobytes().count(b"hpcpar-intact-16"), _data())
    assert good_apply.get(timeout=30) == 20_000
    # Run again from the stored request: it keeps its sender's digests, which the engine checks.
    assert rc.resubmit(good_apply.msg_ids).get(timeout=30) == [20_000]
    # The altered one, run again from the database, is refused again (not re-signed as it is).
    with pytest.raises(hpcpar.RemoteError, match="MessageIntegrityError"):
        rc.resubmit(bad_apply.msg_ids).get(timeout=30)


def test_an_altered_result_is_refused_by_the_client(proxied):
    import hpcpar

    rc, proxy = proxied
    view = rc[0]
    view.push({"c": _data()}, block=False).get(timeout=30)
    proxy.tamper = "down"
    try:
        with pytest.raises(hpcpar.RemoteError) as err:
            view.pull("c", block=False).get(timeout=30)
    finally:
        proxy.tamper = None
    assert err.value.ename == "MessageIntegrityError" and "altered in transit" in err.value.evalue
    assert view.pull("c", block=False).get(timeout=30).tobytes() == MARK * 20_000
    # Both engines' replies in one coalesced message: each keeps its own signed digests.
    rc[:].push({"d": _data()}, block=False).get(timeout=30)
    assert [d.tobytes() for d in rc[:].pull("d", block=False).get(timeout=30)] == [MARK * 20_000] * 2
    proxy.tamper = "down"
    try:
        with pytest.raises(hpcpar.CompositeError, match="MessageIntegrityError"):
            rc[:].pull("d", block=False).get(timeout=30)
    finally:
        proxy.tamper = None


# -- altered between the controller and an engine ------------------------------------------------


def _stop(proc, wait: float = 20) -> None:
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(params=["direct", "forwarder"])
def proxied_engine(request, hmac_cluster, proxied, tmp_path):
    """A third engine that reaches the controller (or a per-node forwarder, which relays
    requests unread) only through its own rewriting proxy: its connection file names the
    proxy. "down" is towards the engine: the requests it gets."""
    import subprocess
    import time

    from cluster_helpers import hpcpar_cmd

    from hpcpar.commands.forwarder import forwarder_file

    rc, _ = proxied
    before = set(rc.ids)
    procs: list[subprocess.Popen] = []
    log = open(tmp_path / "engine.log", "wb")
    try:
        upstream = hmac_cluster.profile_dir.engine_file()
        if request.param == "forwarder":
            upstream = forwarder_file(hmac_cluster.profile_dir, "", f"refusal-{os.getpid()}")
            procs.append(subprocess.Popen(hpcpar_cmd("forwarder", "--name", f"refusal-{os.getpid()}",
                                                     "--profile-dir", str(hmac_cluster.profile_dir.path)),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 30
            while not upstream.exists() and time.monotonic() < deadline and procs[0].poll() is None:
                time.sleep(0.05)
        info = json.loads(upstream.read_text())
        host, port = info["urls"][0].removeprefix("tcp://").rsplit(":", 1)
        proxy = RewritingProxy((host, int(port)))
        info["urls"] = [f"tcp://127.0.0.1:{proxy.port}"]
        path = tmp_path / "engine.json"
        path.write_text(json.dumps(info))
        path.chmod(0o600)
        engine = subprocess.Popen(hpcpar_cmd("engine", "--file", str(path)), stdout=log, stderr=subprocess.STDOUT)
        procs.insert(0, engine)
        deadline = time.monotonic() + 60
        while len(rc.ids) < len(before) + 1 and time.monotonic() < deadline and engine.poll() is None:
            time.sleep(0.1)
        (eid,) = set(rc.ids) - before
        yield rc, eid, proxy, tmp_path / "engine.log"
    finally:
        for p in procs:  # the engine first, then its forwarder
            _stop(p)
        log.close()
        deadline = time.monotonic() + 20  # gone from the cluster before the next test counts engines
        while len(rc.ids) > len(before) and time.monotonic() < deadline:
            time.sleep(0.1)
        if "proxy" in locals():
            proxy.close()


def test_a_request_altered_on_its_way_to_an_engine_fails_at_once(proxied_engine):
    """The engine cannot trust a request whose signed payload changed: it does not run it and
    names it to the controller, which fails that task (not a silent wait for ever)."""
    import hpcpar

    rc, eid, proxy, engine_log = proxied_engine
    data = bytearray(MARK * 1000)  # inside the pickled payload, which the signature covers
    view = rc[eid]
    assert view.apply_async(len, data).get(timeout=30) == 16_000  # unaltered through the same proxy

    proxy.tamper = "down"
    try:
        direct = view.apply_async(len, data)
        with pytest.raises(hpcpar.RemoteError) as err:
            direct.get(timeout=30)  # without the engine's notice: TimeoutError
        lbview = rc.load_balanced_view(targets=[eid])
        lbview.retries = 1  # honoured as for an error reply: sent again (here to the same engine)
        balanced = lbview.apply_async(len, data)
        with pytest.raises(hpcpar.RemoteError) as lb_err:
            balanced.get(timeout=30)
        # A coalesced broadcast: the other engines' parts arrive, the altered one fails.
        with pytest.raises(hpcpar.CompositeError) as all_err:
            rc[:].apply_async(len, data).get(timeout=30)
    finally:
        proxy.tamper = None
    assert proxy.rewrites > 0
    for e in (err.value, lb_err.value):
        assert e.ename == "MessageIntegrityError"
        assert f"engine {eid} refused request" in e.evalue
        assert "altered on its way from the controller to the engine" in e.evalue
        assert "was not run" in e.evalue
    assert [x[0] for x in all_err.value.elist] == ["MessageIntegrityError"]
    # The failure is recorded in the task database, as any other result.
    (rec,) = rc.db_query({"msg_id": direct.msg_ids[0]}, keys=["result_content"])
    assert rec["result_content"]["ename"] == "MessageIntegrityError"
    (rec,) = rc.db_query({"msg_id": balanced.msg_ids[0]}, keys=["result_content", "attempts", "engine_id"])
    assert (rec["result_content"]["ename"], rec["attempts"], rec["engine_id"]) == ("MessageIntegrityError", 2, eid)
    assert "refused request" in engine_log.read_text()

    assert view.apply_async(len, data).get(timeout=30) == 16_000  # the same path, unaltered again


def test_a_refusal_notice_fails_only_a_task_outstanding_on_the_engine_that_sends_it(hmac_cluster, proxied):
    """The notice is unsigned: one from another engine (here a registered impostor holding the
    key), naming a task that runs on engine 0, changes nothing; that task completes."""
    import time
    import uuid

    import zmq

    from hpcpar import security, targetset
    from hpcpar.connection import ConnectionInfo

    rc, _ = proxied
    info = ConnectionInfo.load(hmac_cluster.profile_dir.engine_file())
    signer = wire.Signer(info.key_bytes, info.transport)
    name = uuid.uuid4().hex
    ctx = zmq.Context()
    socks = []

    def dealer(ident: str) -> zmq.Socket:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.IDENTITY, ident.encode())
        s.setsockopt(zmq.LINGER, 0)
        security.connect_as(s, info)
        s.connect(info.urls[0])
        socks.append(s)
        return s

    def answer(s: zmq.Socket, *msg_types: str) -> None:
        while s.poll(20_000):
            if signer.unpack(s.recv_multipart()).msg_type in msg_types:
                return
        raise AssertionError(f"no {msg_types} from the controller")

    try:
        control, work = dealer(name), dealer(name + ":w")
        control.send_multipart(signer.pack(signer.header("register_request"), {"uuid": name, "info": {}}))
        answer(control, "register_reply")
        work.send_multipart(signer.pack(signer.header("work_hello"), {"uuid": name}))
        answer(work, "work_hello_reply")
        victim = rc[rc.ids[0]].apply_async(time.sleep, 1.5)
        time.sleep(0.3)  # the request is on engine 0 now
        control.send_multipart(signer.pack(signer.header("heartbeat")))  # a live, registered engine
        for mid in (victim.msg_ids[0], victim.msg_ids[0].rsplit(targetset.SEPARATOR, 1)[0]):
            work.send_multipart([wire.REFUSED, mid.encode(), b"bad signature (forged)"])
        assert victim.get(timeout=30) is None
        # Gone at once, or already declared dead (a loaded machine: no heartbeat for 2 s).
        control.send_multipart(signer.pack(signer.header("unregister_request")))
        answer(control, "unregister_reply", "reregister_request")
    finally:
        for s in socks:
            s.close()
        ctx.term()
