"""A real engine against a scripted controller: what "abort everything you hold"
drops when a controller that forgot the engine (restarted, or declared it
dead) has it register again. The old incarnation's work goes; work sent after
the controller answers the engine's next work_hello runs, however late the
engine gets to it."""

from __future__ import annotations

import subprocess
import time

import pytest
import zmq
from cluster_helpers import hpcpar_cmd

from hpcpar import security, wire
from hpcpar.connection import ConnectionInfo, new_key


class ScriptedController:
    """One ROUTER socket on loopback speaking the engine protocol, step by step."""

    def __init__(self) -> None:
        self.key = new_key()
        self.signer = wire.Signer(self.key.encode("ascii"))
        self.ctx = zmq.Context()
        # The engine logs in as at a real controller (hmac mode: PLAIN with the key's token).
        self.auth = security.Authenticator(self.ctx, {}, plain=security.plain_token(self.key))
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        security.serve_plain(self.sock, "engine")
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.control: bytes | None = None
        self.work: bytes | None = None
        self.replies: dict[str, wire.Message] = {}

    def recv(self, wanted: str, timeout: float = 20.0) -> wire.Message:
        """The next message of type ``wanted`` (replies to requests are kept aside)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.sock.poll(100):
                continue
            ident, *frames = self.sock.recv_multipart()
            msg = self.signer.unpack(frames)
            if msg.msg_type == "register_request":
                self.control = ident
            elif msg.msg_type == "work_hello":
                self.work = ident
            elif msg.msg_type.endswith("_reply"):
                self.replies[msg.header["parent"]] = msg
            if msg.msg_type == wanted:
                return msg
        raise AssertionError(f"no {wanted} from the engine within {timeout} s")

    def reply(self, wanted: str, timeout: float = 20.0) -> wire.Message:
        deadline = time.monotonic() + timeout
        while wanted not in self.replies:
            if time.monotonic() > deadline:
                raise AssertionError(f"no reply to {wanted} within {timeout} s")
            try:
                self.recv("-", timeout=0.2)  # keeps replies aside until ours comes
            except AssertionError:
                pass
        return self.replies[wanted]

    def send(self, ident: bytes | None, msg_type: str, meta: dict | None = None, **fields) -> str:
        assert ident is not None
        hdr = self.signer.header(msg_type, **fields)
        self.sock.send_multipart([ident, *self.signer.pack(hdr, meta or {})])
        return hdr["msg_id"]

    def register(self, abort_first: bool = False) -> None:
        """Answer a register_request (after an abort-all, as a restarted controller does)."""
        req = self.recv("register_request")
        if abort_first:
            self.send(self.control, "abort_request", {"msg_ids": None})
            self.send(self.control, "interrupt_request", {"msg_ids": None})
        self.send(self.control, "register_reply", {"id": 0, "heartbeat_interval": 0.2}, parent=req.msg_id)

    def answer_hello_then_submit(self, code: str) -> str:
        """The engine's work_hello answered, and new work sent right behind the answer."""
        hello = self.recv("work_hello")
        self.send(self.work, "work_hello_reply", parent=hello.msg_id)
        return self.send(self.work, "execute_request", {"code": code})

    def close(self) -> None:
        self.sock.close()
        self.auth.close()
        self.ctx.term()


@pytest.fixture
def scripted(hpcpar_dir, tmp_path):
    ctl = ScriptedController()
    path = tmp_path / "engine.json"
    ConnectionInfo(key=ctl.signer.key.decode("ascii"), urls=[f"tcp://127.0.0.1:{ctl.port}"],
                   role="engine").write(path)
    proc = subprocess.Popen(hpcpar_cmd("engine", "--file", str(path)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        ctl.register()
        first = ctl.answer_hello_then_submit("x = 1")
        assert ctl.reply(first).meta["status"] == "ok"
        yield ctl
    finally:
        proc.kill()
        proc.wait(timeout=10)
        ctl.close()


def test_abort_all_drops_work_that_arrives_late_until_the_engine_re_registers(scripted):
    """Declared dead: the abort may overtake work sent before it on the other
    connection; that work is stale whenever it arrives, until the hello answer."""
    ctl = scripted
    ctl.send(ctl.control, "abort_request", {"msg_ids": None})
    time.sleep(1.5)  # the engine's main thread goes round its loop meanwhile
    stale = ctl.send(ctl.work, "execute_request", {"code": "x = 2"})
    assert ctl.reply(stale).meta["ename"] == "TaskAborted"
    ctl.send(ctl.control, "reregister_request")
    ctl.register()
    fresh = ctl.answer_hello_then_submit("x")
    assert ctl.reply(fresh).meta["status"] == "ok"


def test_restarted_controller_abort_spares_work_sent_after_the_hello_answer(scripted):
    """Restart: the running task is interrupted, the queued one dropped, the
    task submitted right behind the work_hello answer runs."""
    ctl = scripted
    running = ctl.send(ctl.work, "execute_request", {"code": "import time; time.sleep(30)"})
    queued = ctl.send(ctl.work, "execute_request", {"code": "x = 3"})
    time.sleep(0.5)
    ctl.send(ctl.control, "reregister_request")
    ctl.register(abort_first=True)
    fresh = ctl.answer_hello_then_submit("x = 4")
    assert ctl.reply(running, timeout=10).meta["ename"] == "KeyboardInterrupt"
    assert ctl.reply(queued).meta["ename"] == "TaskAborted"
    assert ctl.reply(fresh).meta["status"] == "ok"
