"""JupyterLab's debugger on a bound engine kernel (bind_kernel): debug_request on the control
channel, debug_event on IOPub, driven by jupyter_client with the requests JupyterLab sends.
A breakpoint in a dumped cell stops the cell on the engine, its frame is inspected, and the
cell finishes with its output after continue; a breakpoint in a function defined in a cell
stops a task the client runs, while the engine keeps its heartbeats."""

from __future__ import annotations

import os
import time

import pytest
from cluster_helpers import bound_kernel, start_cluster

import hpcpar
from hpcpar.engine.kernel_debugger import HASH_SEED, murmur2

pytest.importorskip("IPython")
pytest.importorskip("debugpy")
jupyter_client = pytest.importorskip("jupyter_client")


class DebugClient:
    """What JupyterLab's debugger does with a kernel, over jupyter_client's channels."""

    def __init__(self, kc) -> None:
        self.kc = kc
        self.seq = 0
        self.events: list[dict] = []

    def request(self, command: str, timeout: float = 60, **arguments) -> dict:
        self.seq += 1
        msg = self.kc.session.msg("debug_request", {"type": "request", "seq": self.seq, "command": command,
                                                     "arguments": arguments})
        self.kc.control_channel.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            reply = self.kc.get_control_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                assert reply["msg_type"] == "debug_reply"
                content = reply["content"]
                assert content["request_seq"] == self.seq and content["command"] == command, content
                return content

    def ok(self, command: str, **arguments) -> dict:
        content = self.request(command, **arguments)
        assert content["success"], content.get("message", content)
        return content.get("body", {})

    def event(self, name: str, timeout: float = 60) -> dict:
        """The next debug_event ``name`` on IOPub (other IOPub messages are kept in .events)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["msg_type"] == "debug_event":
                if msg["content"]["event"] == name:
                    return msg["content"].get("body", {})
            else:
                self.events.append(msg)


@pytest.fixture()
def debug_kernel(tmp_path):
    with bound_kernel(f"kernel-debugger-{os.getpid()}", tmp_path) as (rc, kc):
        yield rc, kc, DebugClient(kc)


def _start(dbg: DebugClient) -> dict:
    """JupyterLab's order: initialize, attach, debugInfo."""
    caps = dbg.ok("initialize", clientID="jupyterlab", adapterID="python", pathFormat="path",
                  linesStartAt1=True, columnsStartAt1=True, supportsVariableType=True)
    assert caps.get("supportsConfigurationDoneRequest")
    dbg.ok("attach")
    info = dbg.ok("debugInfo")
    assert info["isStarted"] and info["hashMethod"] == "Murmur2" and info["tmpFileSuffix"] == ".py"
    return info


def test_breakpoint_in_a_cell_stops_and_shows_its_locals(debug_kernel):
    rc, kc, dbg = debug_kernel
    assert kc.kernel_info(reply=True, timeout=10)["content"]["debugger"] is True
    info = dbg.ok("debugInfo")
    assert info["isStarted"] is False
    info = _start(dbg)

    code = "total = 0\nfor i in range(4):\n    total += i\nlabel = f'total={total}'\nprint(label)\n"
    path = dbg.ok("dumpCell", code=code)["sourcePath"]
    # the frontend names the file itself from the hash parameters of debugInfo
    assert path == f"{info['tmpFilePrefix']}{murmur2(code.encode(), info['hashSeed'])}{info['tmpFileSuffix']}"
    assert open(path).read() == code
    [bp] = dbg.ok("setBreakpoints", source={"path": path}, breakpoints=[{"line": 4}],
                  sourceModified=False)["breakpoints"]
    assert bp["verified"]
    dbg.ok("configurationDone")
    assert dbg.ok("debugInfo")["breakpoints"] == [{"source": path, "breakpoints": [{"line": 4}]}]

    msg_id = kc.execute(code)
    stopped = dbg.event("stopped")
    assert stopped["reason"] == "breakpoint"
    thread = stopped["threadId"]
    assert dbg.ok("debugInfo")["stoppedThreads"] == [thread]
    frames = dbg.ok("stackTrace", threadId=thread)["stackFrames"]
    assert (frames[0]["source"]["path"], frames[0]["line"]) == (path, 4)
    assert [f["source"]["path"] for f in frames] == [path]  # just the cell: no engine, IPython frames
    scopes = dbg.ok("scopes", frameId=frames[0]["id"])["scopes"]
    assert scopes[0]["name"] == "Locals"
    variables = {v["name"]: v for v in dbg.ok("variables", variablesReference=scopes[0]["variablesReference"])[
        "variables"]}
    assert variables["total"]["value"] == "6" and variables["i"]["value"] == "3"
    rich = dbg.ok("richInspectVariables", variableName="total", frameId=frames[0]["id"])
    assert rich["data"]["text/plain"] == "6"
    assert dbg.ok("source", source={"path": path})["content"] == code
    assert any(m["name"] == "hpcpar" for m in dbg.ok("modules")["modules"])

    dbg.ok("next", threadId=thread)
    assert dbg.event("stopped")["reason"] == "step"
    frames = dbg.ok("stackTrace", threadId=thread)["stackFrames"]
    assert frames[0]["line"] == 5
    dbg.ok("continue", threadId=thread)
    reply = kc.get_shell_msg(timeout=60)
    assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["status"] == "ok"
    deadline = time.monotonic() + 30
    while not any(m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
                  and m["parent_header"].get("msg_id") == msg_id for m in dbg.events):
        dbg.events.append(kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic())))
    text = "".join(m["content"]["text"] for m in dbg.events
                   if m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msg_id)
    assert text == "total=6\n"
    assert rc[0].pull("label", block=True) == "total=6"

    # with no thread stopped, the variables panel lists the engine's namespace
    names = {v["name"]: v["value"] for v in dbg.ok("inspectVariables")["variables"]}
    assert names["label"] == "'total=6'"
    assert dbg.ok("richInspectVariables", variableName="total")["data"]["text/plain"] == "6"
    dbg.ok("disconnect", restart=False, terminateDebuggee=False)
    assert dbg.ok("debugInfo")["isStarted"] is False
    assert rc[0].apply_sync(lambda: "still serving") == "still serving"


def test_breakpoint_in_a_function_stops_a_task_from_the_client(debug_kernel):
    rc, kc, dbg = debug_kernel
    _start(dbg)
    code = "def scale(x):\n    y = x * 10\n    return y\n"
    path = dbg.ok("dumpCell", code=code)["sourcePath"]
    dbg.ok("setBreakpoints", source={"path": path}, breakpoints=[{"line": 3}])
    dbg.ok("configurationDone")
    assert kc.execute_interactive(code, timeout=30)["content"]["status"] == "ok"

    ar = rc[0].apply_async(hpcpar.interactive(lambda v: scale(v) + 1), 4)  # noqa: F821 - scale is the engine's
    stopped = dbg.event("stopped")
    frames = dbg.ok("stackTrace", threadId=stopped["threadId"])["stackFrames"]
    assert (frames[0]["name"], frames[0]["source"]["path"], frames[0]["line"]) == ("scale", path, 3)
    scopes = dbg.ok("scopes", frameId=frames[0]["id"])["scopes"]
    local = {v["name"]: v["value"] for v in dbg.ok("variables", variablesReference=scopes[0]["variablesReference"])[
        "variables"]}
    assert local["x"] == "4" and local["y"] == "40"
    dbg.ok("copyToGlobals", srcVariableName="y", dstVariableName="y_seen", srcFrameId=frames[0]["id"])
    assert not ar.ready()  # the task waits at the breakpoint...
    time.sleep(2.5)  # ...longer than the engine's heartbeat timeout (2 s here): heartbeats go on
    assert rc.ids == [0]
    dbg.ok("continue", threadId=stopped["threadId"])
    assert ar.get(timeout=60) == 41
    assert rc[0].pull("y_seen", block=True) == 40
    dbg.ok("disconnect", restart=False, terminateDebuggee=False)

    # a new session attaches again (JupyterLab's debugger toggled off and on)
    _start(dbg)
    dbg.ok("setBreakpoints", source={"path": path}, breakpoints=[{"line": 2}])
    ar = rc[0].execute("z = scale(5)")
    stopped = dbg.event("stopped")
    assert dbg.ok("stackTrace", threadId=stopped["threadId"])["stackFrames"][0]["line"] == 2
    dbg.ok("continue", threadId=stopped["threadId"])
    ar.get(timeout=60)
    assert rc[0].pull("z", block=True) == 50
    dbg.ok("disconnect", restart=False, terminateDebuggee=False)


def test_requests_before_initialize_and_bad_input_get_clear_answers(debug_kernel):
    rc, kc, dbg = debug_kernel
    content = dbg.request("stackTrace", threadId=1)
    assert not content["success"] and "not started" in content["message"]
    content = dbg.request("richInspectVariables", variableName="not a name")
    assert not content["success"] and "not a variable name" in content["message"]
    content = dbg.request("source", source={"path": "/nonexistent/cell.py"})
    assert not content["success"] and "/nonexistent/cell.py" in content["message"]


def test_an_engine_without_debugpy_says_so(tmp_path):
    cluster, rc = start_cluster(1, f"kernel-nodebugpy-{os.getpid()}",
                                env={"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")})
    try:
        rc[0].execute("import sys\nsys.modules['debugpy'] = None", block=True)  # import debugpy fails there
        kc = jupyter_client.BlockingKernelClient(connection_file=rc[0].apply_sync(hpcpar.bind_kernel))
        kc.load_connection_file()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=30)
            assert kc.kernel_info(reply=True, timeout=10)["content"]["debugger"] is False
            content = DebugClient(kc).request("initialize", clientID="jupyterlab", adapterID="python")
            assert not content["success"] and "pip install debugpy" in content["message"]
        finally:
            kc.stop_channels()
    finally:
        cluster.stop_cluster_sync()


def test_cell_file_names_match_the_frontends_hash():
    """Values computed by JupyterLab's own murmur2 (its debugger's hash, run under node): tails of
    0-3 bytes, an empty string, and UTF-8 text, so a cell's file name is the one the frontend expects."""
    seed = 0x9747B28C
    assert [murmur2(s.encode(), seed) for s in ("a", "abc", "abcd", "Hello, world!")] == [
        2731586172, 479470107, 2971317748, 3199900434]
    assert (murmur2(b"", 0), murmur2(b"", 1)) == (0, 1540447798)
    assert murmur2("π = 3.14\n".encode(), HASH_SEED) == 4154017583


def test_jupyterlab_opens_the_engine_kernel_through_a_kernelspec(debug_kernel, tmp_path, monkeypatch):
    """What JupyterLab's server does: start the kernelspec's command with a connection file of
    its own (jupyter_client's KernelManager), then talk to it; here a debug session too."""
    from jupyter_client.manager import KernelManager

    from hpcpar.engine import kernel_proxy

    rc, kc, _ = debug_kernel
    existing = kc.connection_file
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    where = kernel_proxy.install(existing, name="hpcpar-engine-0", prefix=str(tmp_path))
    assert os.path.basename(where) == "hpcpar-engine-0"
    km = KernelManager(kernel_name="hpcpar-engine-0")
    km.start_kernel()
    try:
        lab = km.client()
        lab.start_channels()
        try:
            lab.wait_for_ready(timeout=60)
            assert lab.kernel_info(reply=True, timeout=30)["content"]["debugger"] is True
            rc[0].push({"from_client": 20}, block=True)
            dbg = DebugClient(lab)
            _start(dbg)
            code = "doubled = from_client * 2\nprint('doubled', doubled)\n"
            path = dbg.ok("dumpCell", code=code)["sourcePath"]
            dbg.ok("setBreakpoints", source={"path": path}, breakpoints=[{"line": 2}])
            dbg.ok("configurationDone")
            msg_id = lab.execute(code)
            stopped = dbg.event("stopped")
            frame = dbg.ok("stackTrace", threadId=stopped["threadId"])["stackFrames"][0]
            scopes = dbg.ok("scopes", frameId=frame["id"])["scopes"]
            names = {v["name"]: v["value"] for v in dbg.ok("variables", variablesReference=scopes[0][
                "variablesReference"])["variables"]}
            assert names["doubled"] == "40"
            dbg.ok("continue", threadId=stopped["threadId"])
            reply = lab.get_shell_msg(timeout=60)
            assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["status"] == "ok"
            assert rc[0].pull("doubled", block=True) == 40
        finally:
            lab.stop_channels()
        km.restart_kernel(now=False)  # "Restart Kernel": the relay restarts, the engine's namespace stays
        lab = km.client()
        lab.start_channels()
        try:
            lab.wait_for_ready(timeout=60)
            dbg = DebugClient(lab)
            _start(dbg)
            code = "tripled = doubled // 2 * 3\nprint(tripled)\n"
            path = dbg.ok("dumpCell", code=code)["sourcePath"]
            dbg.ok("setBreakpoints", source={"path": path}, breakpoints=[{"line": 2}])
            lab.execute(code)
            dbg.event("stopped")
        finally:
            lab.stop_channels()
        # "Shut Down Kernel" while the cell waits at the breakpoint: jupyter_client interrupts the
        # cell first, then the engine unbinds its kernel and goes on
        km.shutdown_kernel(now=False)
        assert not km.is_alive()
        assert rc[0].pull("tripled", block=True) == 60
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    deadline = time.monotonic() + 20
    while os.path.exists(existing) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(existing)
    # bound again, the engine's kernel debugs again (debugpy's adapter of this process is reused)
    again = jupyter_client.BlockingKernelClient(connection_file=rc[0].apply_sync(hpcpar.bind_kernel))
    again.load_connection_file()
    again.start_channels()
    try:
        again.wait_for_ready(timeout=30)
        dbg = DebugClient(again)
        assert dbg.ok("debugInfo")["isStarted"] is False
        _start(dbg)
        code = "again = 1\nagain += 1\n"
        path = dbg.ok("dumpCell", code=code)["sourcePath"]
        dbg.ok("setBreakpoints", source={"path": path}, breakpoints=[{"line": 2}])
        again.execute(code)
        stopped = dbg.event("stopped")
        dbg.ok("continue", threadId=stopped["threadId"])
        assert again.get_shell_msg(timeout=60)["content"]["status"] == "ok"
        assert rc[0].pull("again", block=True) == 2
    finally:
        again.stop_channels()
