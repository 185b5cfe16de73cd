"""Runs one request on the engine's main thread and builds its reply.

Every request gets exactly one reply, whatever happens: an exception in user
code, a result that cannot be pickled, KeyboardInterrupt from a signal, or
``sys.exit()`` in user code all become an error reply, and the engine keeps
serving.
"""

from __future__ import annotations

import ast
import io
import linecache
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any

from .. import serialize, wire
from . import display
from .namespace import Namespace

_ENGINE_DIR = os.path.dirname(os.path.abspath(__file__))
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


def format_remote_traceback(exc: BaseException) -> list[str]:
    """The traceback of ``exc`` without the engine's own frames."""
    tb = exc.__traceback__
    while tb is not None and os.path.dirname(os.path.abspath(tb.tb_frame.f_code.co_filename)) == _ENGINE_DIR:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip("\n").splitlines()


def error_meta(exc: BaseException) -> dict[str, Any]:
    return {
        "status": "error",
        "ename": type(exc).__name__,
        "evalue": str(exc),
        "traceback": format_remote_traceback(exc),
    }


class Executor:
    def __init__(self, namespace: Namespace) -> None:
        self.ns = namespace
        self.running: str | None = None
        self.cell_count = 0
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
                meta["execute_result"] = result.data
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
        f, args, kwargs = self.loader.loads(msg.payload, msg.buffers)
        rebind = self.ns.rebinder.rebind
        f = rebind(f)
        args = [rebind(a) for a in args]
        return f(*args, **kwargs)

    def do_execute(self, msg: wire.Message) -> _ExecuteResult:
        code = msg.meta.get("code", "")
        if not isinstance(code, str):
            raise TypeError("execute needs code as a string")
        self.cell_count += 1
        filename = f"<hpcpar-cell-{self.cell_count}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        tree = ast.parse(code, filename, "exec")
        last = None
        quiet = code.rstrip().endswith(";")  # as in IPython, a trailing ';' hides the value
        if not msg.meta.get("silent", True) and not quiet and tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        g = self.ns.globals
        count = self.cell_count
        try:
            exec(compile(tree, filename, "exec"), g)
            if last is not None:
                value = eval(compile(last, filename, "eval"), g)
                if value is not None:
                    g["_"] = value
                    return _ExecuteResult(display.result_bundle(value), count)
            return _ExecuteResult(None, count)
        finally:
            display.flush_figures()  # like a notebook's inline backend

    def do_clear(self, msg: wire.Message) -> None:
        self.ns.reset(self.ns.extra)


@dataclass
class _ExecuteResult:
    data: dict[str, Any] | None  # MIME bundle of the cell's value ({"text/plain": repr, ...})
    count: int = 0
