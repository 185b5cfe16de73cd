"""A graphical debugger on a live engine: debugpy.listen() on the engine, then a Debug
Adapter Protocol client (what VS Code's "Remote Attach" is) attaches, sets a breakpoint in a
function the engine runs, stops there, evaluates in the frame and continues. (JupyterLab's
debugger goes through the engine's bound kernel instead: test_kernel_debugger.py.)"""

from __future__ import annotations

import json
import os
import socket

import pytest
from cluster_helpers import start_cluster

pytest.importorskip("debugpy")


class DAP:
    """A minimal Debug Adapter Protocol client: requests out, responses and events in."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=60)
        self.file = self.sock.makefile("rb")
        self.seq = 0

    def send(self, command: str, **arguments) -> int:
        self.seq += 1
        body = json.dumps({"seq": self.seq, "type": "request", "command": command, "arguments": arguments})
        self.sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body.encode()) + body.encode())
        return self.seq

    def _read(self) -> dict:
        length = None
        while line := self.file.readline().strip():
            name, value = line.split(b":", 1)
            if name.lower() == b"content-length":
                length = int(value)
        assert length is not None, "the adapter closed the connection"
        return json.loads(self.file.read(length))

    def until(self, event: str | None = None, answer: int | None = None) -> dict:
        while True:
            msg = self._read()
            if (event is not None and msg.get("event") == event) or (answer is not None and msg.get("request_seq") == answer):
                return msg

    def request(self, command: str, **arguments) -> dict:
        reply = self.until(answer=self.send(command, **arguments))
        assert reply["success"], reply
        return reply.get("body", {})

    def close(self) -> None:
        self.sock.close()


def test_breakpoint_in_a_task_on_a_live_engine(tmp_path):
    script = tmp_path / "work.py"
    script.write_text("def target(x):\n    y = x * 2\n    return y\n")
    cluster, rc = start_cluster(1, f"debugpy-{os.getpid()}")
    try:
        rc[0].execute(f"%run {script}", block=True)  # target's code names work.py, as a user's would
        host, port = rc[0].apply_sync(lambda: __import__("debugpy").listen(("127.0.0.1", 0)))
        dap = DAP(host, port)
        try:
            dap.request("initialize", adapterID="hpcpar-test", clientID="test")
            attach = dap.send("attach", justMyCode=False)
            dap.until(event="initialized")
            [bp] = dap.request("setBreakpoints", source={"path": str(script)}, breakpoints=[{"line": 2}])["breakpoints"]
            assert bp["verified"]
            dap.request("configurationDone")
            dap.until(answer=attach)
            threads = {t["name"] for t in dap.request("threads")["threads"]}
            assert "MainThread" in threads  # the thread that runs the engine's tasks

            ar = rc[0].execute("result = target(21)")
            stopped = dap.until(event="stopped")["body"]
            assert stopped["reason"] == "breakpoint"
            top = dap.request("stackTrace", threadId=stopped["threadId"])["stackFrames"][0]
            assert (top["name"], top["line"], top["source"]["path"]) == ("target", 2, str(script))
            assert dap.request("evaluate", expression="x + 1", frameId=top["id"], context="repl")["result"] == "22"
            assert not ar.ready()  # the task waits at the breakpoint
            dap.request("continue", threadId=stopped["threadId"])
            ar.get(timeout=30)
            assert rc[0].pull("result", block=True) == 42
            dap.request("disconnect")
        finally:
            dap.close()
        assert rc[0].apply_sync(lambda: "still serving") == "still serving"
    finally:
        cluster.stop_cluster_sync()
