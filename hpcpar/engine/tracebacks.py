"""Remote tracebacks that show the user's code and nothing else.

Frames of hpcpar itself, of ``ast`` and of IPython sit between the engine's
loop and the user's code; they say nothing to the user, so they are left
out (of chained exceptions too). A syntax error shows where it is, a
magic's usage error and the no-IPython message one line each, as IPython
shows them.
"""

from __future__ import annotations

import ast
import os
import sys
import traceback
from typing import Any

from .cells import NeedsIPython

_HPCPAR_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_AST_FILE = ast.__file__


def _hidden(filename: str) -> bool:
    """Frames of the machinery between the user and their code: hpcpar, ``ast``, IPython."""
    if filename.startswith(("<decorator-gen-", "<frozen importlib")):  # IPython's magic wrappers, imports
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
