"""How an engine runs code cells (``execute``, ``%px``, ``run``).

With IPython importable, cells run on the engine's IPython shell
(ipython_shell.py, imported at the first cell, never for ``apply``);
without it, as plain Python here, where IPython syntax gets one clear line.
"""

from __future__ import annotations

import ast
import linecache
import re
import sys
from typing import Any

from . import display
from .namespace import Namespace


def make_cells(ns: Namespace) -> Any:
    """IPython cells when IPython is installed here, else plain Python cells."""
    if _ipython_importable():
        try:
            from .ipython_shell import ShellRunner

            return ShellRunner(ns)
        except Exception as e:  # a broken IPython install: still run Python
            print(f"hpcpar engine: IPython is installed but failed to start ({type(e).__name__}: {e}); "
                  "running cells as plain Python", file=sys.__stderr__)
    return PlainCells(ns)


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
