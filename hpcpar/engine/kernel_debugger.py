"""JupyterLab's debugger on a bound engine kernel: the Jupyter debug protocol over debugpy.

A frontend sends Debug Adapter Protocol (DAP) requests inside ``debug_request``
messages on the control channel and expects each answer in a ``debug_reply``;
what the debugger reports on its own (``stopped``, ``continued``...) comes as
``debug_event`` on IOPub. debugpy implements DAP for Python; this module starts
its adapter in the engine (once per process, on 127.0.0.1) and relays between
the frontend and the adapter on the kernel's I/O thread, which answers the
control channel even while the engine's main thread is stopped at a breakpoint.

Jupyter adds a few requests of its own, answered here: ``debugInfo`` (the
state a reconnecting frontend restores), ``dumpCell`` (a cell's code, written
to a file named from a Murmur2 hash of the code so the frontend can name that
file itself), ``inspectVariables`` / ``richInspectVariables`` (the namespace,
or one variable as a MIME bundle), ``copyToGlobals``, ``modules`` and
``source``. While a debug session is on, cells the engine's shell runs are
compiled under that same file name, so breakpoints set in a dumped cell hit
when it runs, in a console cell, a ``%px`` cell or a function a task calls.

The frame of a stopped task or cell is inspected through debugpy, on the
thread that stopped. The engine's own threads (heartbeats, this relay) are
hidden from the debugger so a breakpoint never stops them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .kernel import BoundKernel

HASH_SEED = 0x68706370  # any fixed seed; debugInfo tells the frontend which
NO_DEBUGPY = ("this engine has no debugpy, which the kernel's debugger relays to: pip install debugpy "
              "where the engines run (or use %debug in a console)")
STEPS = ("continue", "next", "stepIn", "stepOut", "stepBack", "reverseContinue")
_RICH: dict[str, Any] = {}  # richInspectVariables results, evaluated in a stopped frame
_endpoint: tuple[str, int] | None = None  # the adapter of this process, once debugpy.listen ran


def murmur2(data: bytes, seed: int) -> int:
    """32-bit MurmurHash2 of ``data``: the hash the frontend uses to name a cell's file."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    h = (seed ^ len(data)) & mask
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = data[whole:]
    if tail:
        for shift, byte in enumerate(tail):
            h ^= byte << (8 * shift)
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


def available() -> bool:
    """Whether debugpy can be imported here (kernel_info's ``debugger``)."""
    try:
        return importlib.util.find_spec("debugpy") is not None
    except (ImportError, ValueError):  # blocked: sys.modules["debugpy"] is None
        return False


def rich_bundle(value: Any, token: str) -> None:
    """Evaluated in a stopped frame: keep ``value``'s MIME bundle for richInspectVariables."""
    _RICH[token] = _bundle(value)


def copy_to_globals(name: str, value: Any) -> None:
    """Evaluated in a stopped frame: bind ``value`` in the engine's namespace (copyToGlobals)."""
    from .app import Engine

    engine = Engine.running
    assert engine is not None and engine.kernel is not None
    engine.kernel.runner.shell.user_ns[name] = value


def _bundle(value: Any) -> dict:
    try:
        from IPython import get_ipython

        data, metadata = get_ipython().display_formatter.format(value)
    except Exception:  # noqa: BLE001 - a broken _repr_*_ still gets its plain repr
        data, metadata = {"text/plain": repr(value)}, {}
    return {"data": json.loads(json.dumps(data, default=repr)), "metadata": json.loads(json.dumps(metadata, default=repr))}


def _short_repr(value: Any, limit: int = 200) -> str:
    try:
        text = repr(value)
    except Exception as e:  # noqa: BLE001 - user objects' __repr__ may raise anything
        text = f"<repr failed: {type(e).__name__}: {e}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _hide_engine_threads() -> None:
    """The engine's own threads (heartbeats, this relay) must never stop at a breakpoint:
    mark them as debugger threads, which debugpy neither traces nor lists."""
    for t in threading.enumerate():
        if t.name.startswith("hpcpar-"):
            t.pydev_do_not_trace = True  # type: ignore[attr-defined]
            t.is_pydev_daemon_thread = True  # type: ignore[attr-defined]


def _listen() -> tuple[str, int]:
    """Start debugpy's adapter for this process (once), on loopback."""
    global _endpoint
    if _endpoint is None:
        os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # no frozen-modules warning on stderr
        import debugpy

        try:
            host, port = debugpy.listen(("127.0.0.1", 0))
        except RuntimeError as e:
            raise RuntimeError(f"{e}: something on this engine called debugpy.listen() already; attach an editor "
                               "to that port, or restart the engine to use the kernel's debugger") from None
        _endpoint = (str(host), int(port))
    return _endpoint


class Debugger:
    """The debug side of one bound kernel. Runs on the kernel's I/O thread only."""

    def __init__(self, kernel: BoundKernel) -> None:
        self.kernel = kernel
        self.available = available()
        self.tmp_dir = os.path.join(tempfile.gettempdir(), f"hpcpar-debug-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self.sock: socket.socket | None = None
        self._buffer = b""
        self._seq = 0
        # our seq -> what to do with the adapter's response
        self._pending: dict[int, Callable[[dict], None]] = {}
        self.started = False  # attached: a debug session is on
        self._attaching: dict | None = None  # attach sent, waiting for the adapter's "initialized"
        self.breakpoints: dict[str, list[dict]] = {}  # source path -> its SourceBreakpoints
        self.stopped_threads: set[int] = set()
        self._capabilities: dict = {}  # the adapter's answer to initialize
        self._closing = False
        self._parent: dict | None = None  # the last debug_request: parent of the events

    # -- file names of cells --------------------------------------------------------------------

    def cell_path(self, code: str) -> str:
        return os.path.join(self.tmp_dir, f"{murmur2(code.encode(), HASH_SEED)}.py")

    def dump(self, code: str) -> str:
        path = self.cell_path(code)
        os.makedirs(self.tmp_dir, mode=0o700, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(code)
        return path

    def _code_name(self, raw_code: str, transformed_code: str, number: int) -> str:
        """Cells compile under their dumped file's name while a session is on (IPython calls this)."""
        path = self.cell_path(raw_code)
        if not os.path.exists(path):
            self.dump(raw_code)  # so the source request and stepping into its functions find it
        return path

    def _name_cells(self, on: bool) -> None:
        compiler = self.kernel.runner.shell.compile
        if on:
            compiler.get_code_name = self._code_name
        else:
            compiler.__dict__.pop("get_code_name", None)

    def trace_main_thread(self) -> None:
        """On the engine's main thread, between tasks: while a session is on, make sure debugpy
        traces it. A trace function that raised (an interrupt while stopped at a breakpoint) or
        pdb (%debug) leaves the thread untraced, and breakpoints would no longer stop it."""
        if self.started and sys.gettrace() is None:
            import debugpy

            debugpy.debug_this_thread()

    # -- requests from the frontend (debug_request on control) ----------------------------------

    def handle(self, msg: dict, reply: Callable[[dict], None]) -> None:
        """One debug_request; ``reply(content)`` sends its debug_reply (now or later)."""
        request = msg["content"]
        command = request.get("command", "")
        self._parent = msg

        def answer(success: bool = True, body: dict | None = None, message: str = "") -> None:
            content = {"type": "response", "request_seq": request.get("seq", 0), "seq": self._next_seq(),
                       "command": command, "success": success}
            if body is not None:
                content["body"] = body
            if message:
                content["message"] = message
            reply(content)

        if not self.available:
            answer(False, message=NO_DEBUGPY)
            return
        args = request.get("arguments") or {}
        local = getattr(self, "_do_" + command, None)
        try:
            if local is not None:
                local(args, answer, request, reply)
            elif self.sock is None:
                answer(False, message=f"{command}: the debugger is not started (send initialize, then attach)")
            else:
                self._forward(request, reply)
        except Exception as e:  # noqa: BLE001 - every request gets its answer
            answer(False, message=f"{command}: {type(e).__name__}: {e}")

    def _do_debugInfo(self, args: dict, answer: Callable, request: dict, reply: Callable) -> None:
        answer(body={
            "isStarted": self.started, "hashMethod": "Murmur2", "hashSeed": HASH_SEED,
            "tmpFilePrefix": self.tmp_dir + os.sep, "tmpFileSuffix": ".py",
            "breakpoints": [{"source": path, "breakpoints": bps} for path, bps in self.breakpoints.items()],
            "stoppedThreads": sorted(self.stopped_threads), "richRendering": True,
            "exceptionPaths": ["Python Exceptions"], "copyToGlobals": True,
        })

    def _do_dumpCell(self, args: dict, answer: Callable, request: dict, reply: Callable) -> None:
        answer(body={"sourcePath": self.dump(str(args.get("code", "")))})

    def _do_initialize(self, args: dict, answer: Callable, request: dict, reply: Callable) -> None:
        if self.started:  # another frontend (or a restarted one) joins the session that is on
            answer(body=self._capabilities)
            return
        if self.sock is None:
            _hide_engine_threads()
            try:
                self.sock = socket.create_connection(_listen(), timeout=30)
            except ConnectionRefusedError:
                answer(False, message="debugpy's adapter in this engine is gone (it ends when a debugger client "
                                      "vanishes without disconnecting); restart the engine to debug it again")
                return
            self._buffer = b""

        def initialized(response: dict) -> None:
            self._capabilities = response.get("body") or {}
            reply({**response, "request_seq": request.get("seq", 0)})

        self._send(request, initialized)

    def _do_attach(self, args: dict, answer: Callable, request: dict, reply: Callable) -> None:
        if self.started:
            answer()  # already attached (see _do_initialize)
            return
        if self.sock is None:
            answer(False, message="attach: send initialize first")
            return
        hpcpar_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        arguments = {"justMyCode": True, **args}
        arguments.setdefault("rules", []).append({"path": hpcpar_dir + os.sep + "**", "include": False})
        self._attaching = {**request, "arguments": arguments}

        def attached(response: dict) -> None:
            self._attaching = None
            if response.get("success"):
                self.started = True
                self._name_cells(True)
            reply({**response, "request_seq": request.get("seq", 0)})

        self._send(self._attaching, attached)

    def _do_configurationDone(self, args: dict, answer: Callable, request: dict, reply: Callable) -> None:
        if self.started:
            answer()  # the relay sent it to debugpy while attaching (see _dispatch)
        elif self.sock is None:
            answer(False, message="configurationDone: send initialize and attach first")
        else:
            self._forward(request, reply)

    def _do_disconnect(self, args: dict, answer: Callable, request: dict, reply: Callable) -> None:
        if self.sock is None:
            answer()
            return

        def done(response: dict) -> None:
            self._end_session()
            if self.sock is not None:  # the next initialize connects again, as a new client
                self.sock.close()
                self.sock = None
            reply({**response, "request_seq": request.get("seq", 0)})

        self._send(request, done)

    def _do_inspectVariables(self, args: dict, answer: Callable, request: dict, reply: Callable) -> None:
        shell = self.kernel.runner.shell
        hidden = shell.user_ns_hidden
        variables = []
        for name, value in list(shell.user_ns.items()):
            if name.startswith("_") or name in hidden or type(value).__name__ == "module":
                continue
            variables.append({"name": name, "value": _short_repr(value), "type": type(value).__name__,
                              "evaluateName": name, "variablesReference": 0})
        answer(body={"variables": variables})

    def _do_richInspectVariables(self, args: dict, answer: Callable, request: dict, reply: Callable) -> None:
        name = str(args.get("variableName", ""))
        if not name.isidentifier():
            answer(False, message=f"richInspectVariables: {name!r} is not a variable name")
            return
        frame = args.get("frameId")
        if frame is None or not self.started:
            ns = self.kernel.runner.shell.user_ns
            if name not in ns:
                answer(False, message=f"richInspectVariables: no variable {name!r} in the engine's namespace")
                return
            answer(body=_bundle(ns[name]))
            return
        token = uuid.uuid4().hex
        expression = f"__import__({__name__!r}, fromlist=['_']).rich_bundle({name}, {token!r})"

        def evaluated(response: dict) -> None:
            bundle = _RICH.pop(token, None)
            if bundle is None:
                answer(False, message=response.get("message") or f"richInspectVariables: cannot evaluate {name}")
            else:
                answer(body=bundle)

        self._send({"type": "request", "command": "evaluate",
                    "arguments": {"expression": expression, "frameId": frame, "context": "repl"}}, evaluated)

    def _do_copyToGlobals(self, args: dict, answer: Callable, request: dict, reply: Callable) -> None:
        src, dst = str(args.get("srcVariableName", "")), str(args.get("dstVariableName", ""))
        if not (src.isidentifier() and dst.isidentifier()) or self.sock is None:
            answer(False, message="copyToGlobals needs srcVariableName, dstVariableName and a stopped frame")
            return
        expression = f"__import__({__name__!r}, fromlist=['_']).copy_to_globals({dst!r}, {src})"
        self._send({"type": "request", "command": "evaluate",
                    "arguments": {"expression": expression, "frameId": args.get("srcFrameId"), "context": "repl"}},
                   lambda response: answer(bool(response.get("success")), message=response.get("message", "")))

    def _do_modules(self, args: dict, answer: Callable, request: dict, reply: Callable) -> None:
        found = [{"id": name, "name": name, "path": module.__file__}
                 for name, module in list(sys.modules.items()) if getattr(module, "__file__", None)]
        start = int(args.get("startModule", 0) or 0)
        count = int(args.get("moduleCount", 0) or 0)
        answer(body={"modules": found[start:start + count] if count else found[start:], "totalModules": len(found)})

    def _do_source(self, args: dict, answer: Callable, request: dict, reply: Callable) -> None:
        path = str((args.get("source") or {}).get("path", ""))
        try:
            with open(path, encoding="utf-8") as f:
                answer(body={"content": f.read()})
        except OSError:
            import linecache

            lines = linecache.getlines(path)
            if lines:
                answer(body={"content": "".join(lines)})
            else:
                answer(False, message=f"source: no file {path!r} on the engine's host")

    # -- the adapter ----------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, request: dict, then: Callable[[dict], None]) -> None:
        """Send a request to the adapter; ``then(response)`` when it answers."""
        assert self.sock is not None
        seq = self._next_seq()
        self._pending[seq] = then
        body = json.dumps({**request, "seq": seq}).encode()
        self.sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def _forward(self, request: dict, reply: Callable[[dict], None]) -> None:
        """A request the adapter answers: its response goes back under the frontend's seq."""
        client_seq = request.get("seq", 0)
        command = request.get("command")
        if command in STEPS:  # the thread runs again (debugpy confirms with a continued event)
            thread = (request.get("arguments") or {}).get("threadId")
            self.stopped_threads.discard(thread)

        def back(response: dict) -> None:
            if command == "setBreakpoints" and response.get("success"):
                args = request.get("arguments") or {}
                path = (args.get("source") or {}).get("path")
                if path:
                    if args.get("breakpoints"):
                        self.breakpoints[path] = list(args["breakpoints"])
                    else:
                        self.breakpoints.pop(path, None)
            reply({**response, "request_seq": client_seq})

        self._send(request, back)

    def fileno(self) -> int | None:
        return self.sock.fileno() if self.sock is not None else None

    def on_readable(self) -> None:
        """The adapter wrote: dispatch each complete message."""
        assert self.sock is not None
        try:
            data = self.sock.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        self._buffer += data
        while True:
            head, sep, rest = self._buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if len(rest) < length:
                return
            self._buffer = rest[length:]
            self._dispatch(json.loads(rest[:length]))

    def _dispatch(self, msg: dict) -> None:
        kind = msg.get("type")
        if kind == "response":
            then = self._pending.pop(msg.get("request_seq", -1), None)
            if then is not None:
                then(msg)
            return
        if kind != "event":
            return
        event, body = msg.get("event"), msg.get("body") or {}
        if event == "initialized" and self._attaching is not None:
            # debugpy answers attach only after configurationDone; JupyterLab sends that only once
            # attach is answered, so the relay finishes the configuration itself (breakpoints can
            # still be set at any time; a later configurationDone is harmless).
            self._send({"type": "request", "command": "configurationDone", "arguments": {}}, lambda r: None)
        elif event == "stopped" and body.get("threadId") is not None:
            self.stopped_threads.add(body["threadId"])
        elif event == "continued":
            if body.get("allThreadsContinued", True):
                self.stopped_threads.clear()
            else:
                self.stopped_threads.discard(body.get("threadId"))
        elif event == "thread" and body.get("reason") == "exited":
            self.stopped_threads.discard(body.get("threadId"))
        elif event == "output" and body.get("category") == "telemetry":
            return
        if not self._closing:
            self.kernel._publish("debug_event", {**msg, "seq": self._next_seq()}, self._parent)

    def _lost(self) -> None:
        """The adapter closed the connection: fail what waits, end the session."""
        pending, self._pending = self._pending, {}
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self._end_session()
        for then in pending.values():
            then({"type": "response", "success": False, "message": "the debug adapter closed the connection"})

    def _end_session(self) -> None:
        self.started = False
        self._attaching = None
        self.breakpoints.clear()
        self.stopped_threads.clear()
        try:
            self._name_cells(False)
        except Exception:  # noqa: BLE001 - the shell may be gone at the end
            pass

    def close(self) -> None:
        """The kernel goes: let stopped threads run on, drop the connection and the cell files.

        The adapter must see a disconnect and answer it: a client that just vanishes takes
        debugpy's adapter down with it, and this process cannot start another one.
        """
        self._closing = True  # IOPub may be closed already: events go nowhere now
        if self.sock is not None:
            answered: list[dict] = []
            try:
                self._send({"type": "request", "command": "disconnect",
                            "arguments": {"restart": False, "terminateDebuggee": False}}, answered.append)
                self.sock.settimeout(10)
                while not answered and self.sock is not None:
                    self.on_readable()
            except OSError:
                pass
            if self.sock is not None:
                self.sock.close()
                self.sock = None
        self._end_session()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
