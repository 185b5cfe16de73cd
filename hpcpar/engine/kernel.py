"""``bind_kernel()``: an engine also serves a Jupyter kernel, to attach a console.

``rc[3].apply_sync(hpcpar.bind_kernel)`` (or ``%px hpcpar.bind_kernel()``)
makes that engine answer the Jupyter messaging protocol too, on its own
loopback ports, and writes a kernel connection file in Jupyter's runtime
directory; ``jupyter console --existing <file>`` on the engine's host then
drives the engine's own IPython shell: same namespace, same execution
count, what hpcpar pushes is there and what the console defines is
pullable.

Kernel cells run on the engine's main thread, between tasks (a console
waits while a task runs), so user code never runs on two threads at once.
Heartbeats and the control channel (interrupt, shutdown) are answered by a
small thread at once. ``shutdown`` from the console unbinds the kernel; the
engine keeps serving. Needs IPython and jupyter_client on the engine.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import zmq

from . import display
from .kernel_comms import COMM_MESSAGES, Comms
from .kernel_debugger import Debugger

PROTOCOL_VERSION = "5.3"


class _Stream:
    """sys.stdout / sys.stderr of a kernel cell: each write becomes a ``stream`` message."""

    def __init__(self, kernel: BoundKernel, name: str, parent: dict) -> None:
        self.kernel, self.name, self.parent = kernel, name, parent

    def write(self, text: str) -> int:
        if text:
            self.kernel._publish("stream", {"name": self.name, "text": text}, self.parent)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


class _Displays:
    """Stands in for display.Collector while a kernel cell runs: displays go to iopub."""

    def __init__(self, kernel: BoundKernel, parent: dict) -> None:
        self.kernel, self.parent = kernel, parent
        self.shown_figures: set[int] = set()
        self.outputs: list[dict] = []

    def add(self, output: dict) -> None:
        content = {"data": output["data"], "metadata": output.get("metadata", {}),
                   "transient": output.get("transient", {})}
        self.kernel._publish("display_data", content, self.parent)


def _console_exit(kernel: BoundKernel) -> Any:
    """``exit`` / ``quit(keep_kernel=True)`` in a console cell: tell the console to quit.

    The engine's own shell would just set its exit flag; a console learns it
    should leave from an ``ask_exit`` payload in the execute reply.
    """
    from IPython.core.autocall import ExitAutocall

    class ConsoleExit(ExitAutocall):
        def __call__(self, keep_kernel: bool = False) -> None:
            kernel._payload.append({"source": "ask_exit", "keepkernel": bool(keep_kernel)})

    return ConsoleExit(kernel.runner.shell)


class BoundKernel:
    """The Jupyter kernel side of one engine (see the module docstring)."""

    def __init__(self, engine: Any, ip: str = "127.0.0.1") -> None:
        from jupyter_client.session import Session
        from jupyter_core.paths import jupyter_runtime_dir

        self.engine = engine
        self.runner = engine.executor.ipython_cells()  # the engine's own IPython shell
        engine_id = engine.id
        self.ip = ip
        self.key = uuid.uuid4().hex
        self.session = Session(key=self.key.encode(), signature_scheme="hmac-sha256", username="hpcpar")
        self.ctx = zmq.Context.instance()
        self.shell_sock = self._bind(zmq.ROUTER)
        self.stdin_sock = self._bind(zmq.ROUTER)
        self.iopub = self._bind(zmq.PUB)
        self.control_port, self.hb_port = self._free_port(), self._free_port()
        self._payload: list[dict] = []
        self.parent: dict | None = None  # the request being served (comm messages name it as parent)
        self.stopping = threading.Event()
        self._iopub_lock = threading.Lock()  # the main thread and the I/O thread both publish
        self.debugger = Debugger(self)  # debug_request (JupyterLab's debugger), on the I/O thread
        self._io_ready = threading.Event()
        self._io = threading.Thread(target=self._io_loop, name="hpcpar-kernel-io", daemon=True)
        # never traced nor stopped by a debugger: it answers the debugger's requests (kernel_debugger.py)
        self._io.pydev_do_not_trace = self._io.is_pydev_daemon_thread = True  # type: ignore[attr-defined]
        self._io.start()
        self._io_ready.wait(10)
        runtime = jupyter_runtime_dir()
        os.makedirs(runtime, exist_ok=True)
        name = f"kernel-hpcpar-engine-{engine_id if engine_id is not None else 'x'}-{os.getpid()}.json"
        self.connection_file = os.path.join(runtime, name)
        info = {"shell_port": self._port(self.shell_sock), "iopub_port": self._port(self.iopub),
                "stdin_port": self._port(self.stdin_sock), "control_port": self.control_port,
                "hb_port": self.hb_port, "ip": ip, "key": self.key, "transport": "tcp",
                "signature_scheme": "hmac-sha256", "kernel_name": "python3"}
        fd = os.open(self.connection_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f, indent=1)
        atexit.register(self._remove_file)
        self.comms = Comms(self)

    # -- sockets -----------------------------------------------------------------------------

    def _bind(self, kind: int) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind_to_random_port(f"tcp://{self.ip}")
        return sock

    @staticmethod
    def _port(sock: zmq.Socket) -> int:
        return int(sock.getsockopt(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1])

    def _free_port(self) -> int:
        with socket.socket() as s:
            s.bind((self.ip, 0))
            return s.getsockname()[1]

    def _publish(self, msg_type: str, content: dict, parent: dict | None, **kw: Any) -> None:
        with self._iopub_lock:
            self.session.send(self.iopub, msg_type, content, parent=parent or {}, **kw)

    # -- the I/O thread: heartbeat and control ----------------------------------------------------

    def _io_loop(self) -> None:
        hb = self.ctx.socket(zmq.REP)
        control = self.ctx.socket(zmq.ROUTER)
        for sock in (hb, control):
            sock.setsockopt(zmq.LINGER, 0)
        hb.bind(f"tcp://{self.ip}:{self.hb_port}")
        control.bind(f"tcp://{self.ip}:{self.control_port}")
        self._io_ready.set()
        poller = zmq.Poller()
        poller.register(hb, zmq.POLLIN)
        poller.register(control, zmq.POLLIN)
        adapter: int | None = None  # the debug adapter's socket, while connected
        try:
            while not self.stopping.is_set():
                if self.debugger.fileno() != adapter:
                    if adapter is not None:
                        poller.unregister(adapter)
                    adapter = self.debugger.fileno()
                    if adapter is not None:
                        poller.register(adapter, zmq.POLLIN)
                for sock, _ in poller.poll(200):
                    if sock is hb:
                        hb.send(hb.recv())
                    elif sock is control:
                        self._on_control(control)
                    elif sock == adapter and self.debugger.fileno() == adapter:
                        self.debugger.on_readable()
        finally:
            self.debugger.close()
            hb.close()
            control.close()

    def _on_control(self, control: zmq.Socket) -> None:
        idents, msg = self.session.recv(control, mode=zmq.NOBLOCK)
        if msg is None:
            return
        mt = msg["header"]["msg_type"]
        self._publish("status", {"execution_state": "busy"}, msg)

        def reply(msg_type: str, content: dict) -> None:
            self.session.send(control, msg_type, content, parent=msg, ident=idents)
            self._publish("status", {"execution_state": "idle"}, msg)

        if mt == "interrupt_request":
            reply("interrupt_reply", {"status": "ok"})
            os.kill(os.getpid(), signal.SIGINT)  # the engine's handler interrupts the running cell
        elif mt == "shutdown_request":
            restart = bool(msg["content"].get("restart", False))
            reply("shutdown_reply", {"status": "ok", "restart": restart})
            self.stopping.set()  # the main thread closes the rest when it next looks
        elif mt == "kernel_info_request":
            reply("kernel_info_reply", self._kernel_info())
        elif mt == "debug_request":  # answered now or when the debug adapter answers
            self.debugger.handle(msg, lambda content: reply("debug_reply", content))
        else:
            reply(mt.replace("_request", "_reply"),
                  {"status": "error", "ename": "NotImplementedError",
                   "evalue": f"{mt} is not supported on an hpcpar engine", "traceback": []})

    # -- the main thread: shell requests between tasks --------------------------------------------

    def serve_until(self, work: zmq.Socket, timeout: float) -> bool:
        """Serve kernel requests until ``work`` has a message (True) or ``timeout`` s pass (False)."""
        if self.stopping.is_set():
            self.close()
            return work.poll(int(timeout * 1000)) != 0
        poller = zmq.Poller()
        poller.register(work, zmq.POLLIN)
        poller.register(self.shell_sock, zmq.POLLIN)
        ready = dict(poller.poll(int(timeout * 1000)))
        self.debugger.trace_main_thread()  # a debug session may have begun meanwhile: trace the cell or task
        if self.shell_sock in ready:
            self._on_shell()
        return work in ready

    def _on_shell(self) -> None:
        idents, msg = self.session.recv(self.shell_sock, mode=zmq.NOBLOCK)
        if msg is None:
            return
        mt = msg["header"]["msg_type"]
        handler = getattr(self, "_do_" + mt.removesuffix("_request"), None)
        self._publish("status", {"execution_state": "busy"}, msg)
        self.parent = msg
        try:
            if mt in COMM_MESSAGES:  # no reply; what the comm's handlers print goes to the console
                with self._cell_io(msg, idents, allow_stdin=False):
                    self.comms.handle(msg, idents)
                return
            if handler is None:
                reply = {"status": "error", "ename": "NotImplementedError",
                         "evalue": f"{mt} is not supported on an hpcpar engine", "traceback": []}
            else:
                reply = handler(msg, idents)
            self.session.send(self.shell_sock, mt.replace("_request", "_reply"), reply, parent=msg, ident=idents)
        except Exception as e:  # noqa: BLE001 - a comm handler may raise anything: report it
            self._publish("stream", {"name": "stderr", "text": f"{mt}: {type(e).__name__}: {e}\n"}, msg)
        finally:
            self.parent = None
            self._publish("status", {"execution_state": "idle"}, msg)
        if self.stopping.is_set():
            self.close()

    def _kernel_info(self) -> dict:
        from .. import __version__

        return {
            "status": "ok", "protocol_version": PROTOCOL_VERSION, "implementation": "hpcpar-engine",
            "implementation_version": __version__,
            "language_info": {"name": "python", "version": sys.version.split()[0], "mimetype": "text/x-python",
                              "file_extension": ".py", "pygments_lexer": "ipython3",
                              "codemirror_mode": {"name": "ipython", "version": 3}, "nbconvert_exporter": "python"},
            "banner": f"hpcpar engine {os.getpid()} on {socket.gethostname()}: its namespace, live\n",
            "help_links": [],
            "debugger": self.debugger.available,  # debug_request relays to debugpy (kernel_debugger.py)
        }

    def _do_kernel_info(self, msg: dict, idents: list) -> dict:
        return self._kernel_info()

    def _do_execute(self, msg: dict, idents: list) -> dict:
        from .tracebacks import format_remote_traceback

        content = msg["content"]
        code = content.get("code", "")
        silent = bool(content.get("silent", False))
        shell = self.runner.shell
        count = shell.execution_count
        self._publish("execute_input", {"code": code, "execution_count": count}, msg)
        ns = shell.user_ns
        saved_exits = {name: ns[name] for name in ("exit", "quit") if name in ns}
        ns["exit"] = ns["quit"] = _console_exit(self)
        self._payload = []
        try:
            with self._cell_io(msg, idents, bool(content.get("allow_stdin", False))):
                data, md, count = self.runner.run(code, silent)
                display.flush_figures()
        except BaseException as e:  # noqa: BLE001 - user code may raise anything
            err = {"ename": type(e).__name__, "evalue": str(e), "traceback": format_remote_traceback(e)}
            self._publish("error", err, msg)
            return {"status": "error", "execution_count": count, **err}
        finally:
            for name in ("exit", "quit"):
                if name in saved_exits:
                    ns[name] = saved_exits[name]
                else:
                    ns.pop(name, None)
        if data is not None:
            self._publish("execute_result", {"data": data, "metadata": md or {}, "execution_count": count}, msg)
        return {"status": "ok", "execution_count": count, "user_expressions": {},
                "payload": self._payload}

    @contextlib.contextmanager
    def _cell_io(self, msg: dict, idents: list, allow_stdin: bool) -> Iterator[None]:
        """While user code runs for ``msg``: its prints, displays and input() go to the console."""
        executor = self.engine.executor
        saved = sys.stdout, sys.stderr, builtins.input, display._current
        executor.running = "kernel"  # so SIGINT (interrupt_request) interrupts the cell
        sys.stdout, sys.stderr = _Stream(self, "stdout", msg), _Stream(self, "stderr", msg)
        display._current = _Displays(self, msg)  # type: ignore[assignment]
        if allow_stdin:
            builtins.input = lambda prompt="": self._input(str(prompt), msg, idents)
        try:
            yield
        finally:
            executor.running = None
            sys.stdout, sys.stderr, builtins.input, display._current = saved

    def _input(self, prompt: str, parent: dict, idents: list) -> str:
        """input() in a console cell: ask the console over the stdin channel."""
        self.session.send(self.stdin_sock, "input_request", {"prompt": prompt, "password": False},
                          parent=parent, ident=idents)
        while True:
            if self.stdin_sock.poll(1000):
                _, reply = self.session.recv(self.stdin_sock, mode=zmq.NOBLOCK)
                if reply is not None and reply["header"]["msg_type"] == "input_reply":
                    return reply["content"]["value"]
            if self.stopping.is_set():
                raise EOFError("the console went away")

    def _do_is_complete(self, msg: dict, idents: list) -> dict:
        status, indent = self.runner.shell.input_transformer_manager.check_complete(msg["content"]["code"])
        reply = {"status": status}
        if status == "incomplete":
            reply["indent"] = " " * (indent or 0)
        return reply

    def _do_complete(self, msg: dict, idents: list) -> dict:
        code = msg["content"]["code"]
        pos = msg["content"].get("cursor_pos", len(code))
        from IPython.core.completer import provisionalcompleter, rectify_completions

        with provisionalcompleter():
            found = list(rectify_completions(code, self.runner.shell.Completer.completions(code, pos)))
        start, end = (found[0].start, found[0].end) if found else (pos, pos)
        return {"status": "ok", "matches": [c.text for c in found], "cursor_start": start, "cursor_end": end,
                "metadata": {}}

    def _do_inspect(self, msg: dict, idents: list) -> dict:
        from IPython.utils.tokenutil import token_at_cursor

        content = msg["content"]
        name = token_at_cursor(content["code"], content.get("cursor_pos", len(content["code"])))
        try:
            bundle = self.runner.shell.object_inspect_mime(name, detail_level=content.get("detail_level", 0))
            return {"status": "ok", "found": True, "data": dict(bundle), "metadata": {}}
        except KeyError:
            return {"status": "ok", "found": False, "data": {}, "metadata": {}}

    def _do_history(self, msg: dict, idents: list) -> dict:
        return {"status": "ok", "history": []}  # engines keep no history file

    def _do_comm_info(self, msg: dict, idents: list) -> dict:
        return {"status": "ok", "comms": self.comms.info(msg["content"].get("target_name"))}

    def _do_shutdown(self, msg: dict, idents: list) -> dict:
        self.stopping.set()
        return {"status": "ok", "restart": bool(msg["content"].get("restart", False))}

    # -- the end -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop serving the kernel (the engine goes on); remove the connection file."""
        self.stopping.set()
        if self.engine.kernel is self:
            self.engine.kernel = None
        self.comms.close()
        for sock in (self.shell_sock, self.stdin_sock, self.iopub):
            sock.close()
        self._io.join(5)
        self._remove_file()

    def _remove_file(self) -> None:
        shutil.rmtree(self.debugger.tmp_dir, ignore_errors=True)  # cells dumped for the debugger
        try:
            os.unlink(self.connection_file)
        except FileNotFoundError:
            pass


def bind_kernel(ip: str = "127.0.0.1", allow_clear: bool = False) -> str:
    """Serve this engine's namespace as a Jupyter kernel too; returns its connection file.

    Run it on an engine: ``rc[3].apply_sync(hpcpar.bind_kernel)`` or
    ``%px hpcpar.bind_kernel()``, then on that host ``jupyter console
    --existing <file>``. Calling it again returns the same file.

    The Jupyter protocol has no encryption (messages are HMAC-signed only), so
    in a cluster whose transport is curve, listening beyond loopback is refused
    unless ``allow_clear=True`` says the network between the hosts is trusted.
    """
    from .app import Engine

    engine = Engine.running
    if engine is None:
        raise RuntimeError("bind_kernel() runs on an engine: rc[3].apply_sync(hpcpar.bind_kernel), "
                           "or %px hpcpar.bind_kernel()")
    if engine.kernel is not None and not engine.kernel.stopping.is_set():
        return engine.kernel.connection_file
    from ..security import is_loopback

    if not allow_clear and not is_loopback(ip) and getattr(engine.info, "transport", "hmac") == "curve":
        raise ValueError(
            f"bind_kernel(ip={ip!r}): this cluster encrypts its traffic (transport curve) but a Jupyter "
            "kernel cannot, so its code and data would cross the network in clear. Keep the default "
            "127.0.0.1 and reach it over SSH from the login node: jupyter console --existing <file> "
            f"--ssh {socket.gethostname()}; or pass allow_clear=True (rc.kernel_connection_file(..., "
            "allow_clear=True), hpcpar console --allow-clear) if the network between the hosts is trusted")
    try:
        import jupyter_client  # noqa: F401
    except ImportError:
        raise RuntimeError("bind_kernel needs jupyter_client on the engine: pip install jupyter_client "
                           "(ipykernel brings it) where the engines run") from None
    engine.kernel = BoundKernel(engine, ip=ip)
    return engine.kernel.connection_file
