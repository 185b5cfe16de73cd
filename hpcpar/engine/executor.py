"""Runs one request on the engine's main thread and builds its reply.

Every request gets exactly one reply, whatever happens: an exception in user
code, a result that cannot be pickled, KeyboardInterrupt from a signal, or
``sys.exit()`` in user code all become an error reply, and the engine keeps
serving.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from typing import Any

from .. import serialize, wire
from . import display
from .cells import PlainCells, make_cells
from .namespace import Namespace
from .tracebacks import error_meta

_NONE_PAYLOAD = serialize.dumps(None)[0]  # what most tasks return, pickled once (any pickler writes it alike)


class Capture(io.TextIOBase):
    """Collects what a task prints. Stands in for sys.stdout / sys.stderr."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.parts: list[str] = []
        self.streamed = 0  # parts already sent as live output by the I/O thread

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.parts.append(text)
        return len(text)

    def writable(self) -> bool:
        return True

    def getvalue(self) -> str:
        return "".join(self.parts)


class Executor:
    def __init__(self, namespace: Namespace) -> None:
        self.ns = namespace
        self.running: str | None = None
        self.cells: Any = None  # PlainCells or ipython_shell.ShellRunner, made at the first execute
        # (msg_id, out, err) of the request running now, for live output.
        self.live: tuple[str, Capture, Capture] | None = None
        self.live_outputs: display.Collector | None = None  # rich outputs of that request
        self.loader = serialize.RequestLoader()  # rebuilds a resent function without unpickling it
        display.install()

    def run(self, msg: wire.Message, msg_id: str) -> tuple[dict[str, Any], bytes, list[Any]]:
        """Returns (reply meta, payload, buffers)."""
        out, err = Capture("stdout"), Capture("stderr")
        real_out, real_err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        self.running = msg_id
        self.live_outputs = display.begin(out, err)
        self.live = (msg_id, out, err)
        error = None
        try:
            handler = getattr(self, "do_" + msg.msg_type.removesuffix("_request"), None)
            if handler is None:
                raise ValueError(f"engine does not understand {msg.msg_type!r}")
            result = handler(msg)
        except BaseException as e:  # noqa: BLE001 - user code may raise anything, even SystemExit
            error = error_meta(e)
            result = None
        finally:
            self.running = None
            self.live = None
            collector = display.end()
            self.live_outputs = None
            sys.stdout, sys.stderr = real_out, real_err
        meta = {"status": "ok", "stdout": out.getvalue(), "stderr": err.getvalue()}
        if error is not None:
            meta.update(error)
        if collector is not None and collector.outputs:
            meta["outputs"] = collector.outputs
        if isinstance(result, _ExecuteResult):
            meta["execution_count"] = result.count
            if result.data is not None:
                meta["execute_result"] = {"data": result.data, "metadata": result.metadata,
                                          "execution_count": result.count}
            result = None
        if result is None:
            return meta, _NONE_PAYLOAD, []
        try:
            payload, buffers = serialize.dumps(result, msg.header.get("pickler", "cloudpickle"))
        except serialize.SerializationError as e:
            meta.update(status="error", ename="SerializationError", evalue=str(e),
                        traceback=[f"SerializationError: the result could not be sent back: {e}"])
            payload, buffers = _NONE_PAYLOAD, []
        return meta, payload, buffers

    # -- request types ------------------------------------------------------------

    def do_apply(self, msg: wire.Message) -> Any:
        if msg.header.get("pickler") == "dill":
            import dill  # noqa: F401 - dill's pickles load only once it is imported (use_dill)
        f, args, kwargs = self.loader.loads(msg.payload, msg.buffers)
        rebind = self.ns.rebinder.rebind
        f = rebind(f)
        args = [rebind(a) for a in args]
        return f(*args, **kwargs)

    def do_execute(self, msg: wire.Message) -> _ExecuteResult:
        code = msg.meta.get("code", "")
        if not isinstance(code, str):
            raise TypeError("execute needs code as a string")
        cells = self.cells or self._make_cells()
        try:
            data, md, count = cells.run(code, msg.meta.get("silent", True))
        finally:
            display.flush_figures()  # like a notebook's inline backend
        return _ExecuteResult(data, md, count)

    def ipython_cells(self) -> Any:
        """The engine's IPython shell runner (for bind_kernel); a clear error without IPython."""
        cells = self.cells or self._make_cells()
        if isinstance(cells, PlainCells):
            raise RuntimeError("this engine has no IPython: pip install ipython where the engines run")
        return cells

    def _make_cells(self) -> Any:
        self.cells = make_cells(self.ns)
        return self.cells

    def do_clear(self, msg: wire.Message) -> None:
        self.ns.reset(self.ns.extra)


@dataclass
class _ExecuteResult:
    data: dict[str, Any] | None  # MIME bundle of the cell's value ({"text/plain": repr, ...})
    metadata: dict[str, Any] | None = None
    count: int = 0
