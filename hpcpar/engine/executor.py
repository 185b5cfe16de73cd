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
import re
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


_HPCPAR_DIR = os.path.dirname(_ENGINE_DIR)
_AST_FILE = ast.__file__


def _hidden(filename: str) -> bool:
    """Frames of the machinery between the user and their code: hpcpar, ``ast``, IPython."""
    if filename.startswith("<decorator-gen-"):  # how IPython wraps its magics
        return True
    path = os.path.abspath(filename)
    if path.startswith(_HPCPAR_DIR + os.sep) or path == _AST_FILE:
        return True
    ipython = sys.modules.get("IPython")
    return ipython is not None and path.startswith(os.path.dirname(ipython.__file__) + os.sep)


def _strip(te: traceback.TracebackException) -> None:
    seen: set[int] = set()
    while te is not None and id(te) not in seen:
        seen.add(id(te))
        te.stack = traceback.StackSummary.from_list([f for f in te.stack if not _hidden(f.filename)])
        if te.__cause__ is not None:
            _strip(te.__cause__)
        te = te.__context__


def format_remote_traceback(exc: BaseException) -> list[str]:
    """The traceback of ``exc`` with only the user's frames: no hpcpar, ``ast`` or IPython ones.
    A syntax error shows where it is, without frames."""
    if isinstance(exc, NeedsIPython):
        return [f"SyntaxError: {exc.msg}"]
    if type(exc).__name__ == "UsageError":  # a magic's bad arguments: IPython shows one line too
        return [f"UsageError: {exc}"]
    if isinstance(exc, SyntaxError):
        return "".join(traceback.format_exception_only(type(exc), exc)).rstrip("\n").splitlines()
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
    _strip(te)
    return "".join(te.format()).rstrip("\n").splitlines()


def error_meta(exc: BaseException) -> dict[str, Any]:
    return {
        "status": "error",
        "ename": "SyntaxError" if isinstance(exc, NeedsIPython) else type(exc).__name__,
        "evalue": str(exc.msg) if isinstance(exc, NeedsIPython) else str(exc),
        "traceback": format_remote_traceback(exc),
    }


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
        """IPython cells when IPython is installed here (imported now, at the first
        execute, never for apply), else plain Python cells."""
        if _ipython_importable():
            try:
                from .ipython_shell import ShellRunner

                self.cells = ShellRunner(self.ns)
                return self.cells
            except Exception as e:  # a broken IPython install: still run Python
                print(f"hpcpar engine: IPython is installed but failed to start ({type(e).__name__}: {e}); "
                      "running cells as plain Python", file=sys.__stderr__)
        self.cells = PlainCells(self.ns)
        return self.cells

    def do_clear(self, msg: wire.Message) -> None:
        self.ns.reset(self.ns.extra)


@dataclass
class _ExecuteResult:
    data: dict[str, Any] | None  # MIME bundle of the cell's value ({"text/plain": repr, ...})
    metadata: dict[str, Any] | None = None
    count: int = 0


def _ipython_importable() -> bool:
    """Whether IPython can be imported here, without importing it."""
    if "IPython" in sys.modules:
        return True
    from importlib.util import find_spec

    try:
        return find_spec("IPython") is not None
    except (ImportError, ValueError):
        return False


class NeedsIPython(SyntaxError):
    """IPython syntax (a magic, a shell escape) on an engine without IPython."""


# '%magic', '%%cell', '!cmd', 'x = !cmd', 'x = %magic', 'obj?': IPython's, not Python's.
_IPYTHON_SYNTAX = re.compile(r"^\s*(%|!|[\w.]+(\s*,\s*[\w.]+)*\s*=\s*[!%])|\?\s*$")


class PlainCells:
    """Cells as plain Python (no IPython on this engine): the value of a last
    expression is the cell's value; a trailing ';' hides it, as in IPython."""

    def __init__(self, namespace: Namespace) -> None:
        self.ns = namespace
        self.count = 0

    def run(self, code: str, silent: bool) -> tuple[dict | None, dict | None, int]:
        self.count += 1
        count = self.count
        filename = f"<hpcpar-cell-{count}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        try:
            tree = ast.parse(code, filename, "exec")
        except SyntaxError as e:
            lines = code.splitlines()
            bad = lines[e.lineno - 1] if e.lineno and 0 < e.lineno <= len(lines) else ""
            if _IPYTHON_SYNTAX.search(bad) or code.lstrip().startswith("%%"):
                raise NeedsIPython("this engine has no IPython: pip install ipython where the engines run "
                                   f"(line {e.lineno}: {bad.strip()})") from None
            raise e.with_traceback(None) from None
        last = None
        quiet = code.rstrip().endswith(";")
        if not silent and not quiet and tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        g = self.ns.globals
        exec(compile(tree, filename, "exec"), g)
        if last is not None:
            value = eval(compile(last, filename, "eval"), g)
            if value is not None:
                g["_"] = value
                return display.result_bundle(value), {}, count
        return None, None, count
