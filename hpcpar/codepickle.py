"""cloudpickle that keeps where code was written, for tracebacks on engines.

cloudpickle renames the file of every code object it ships ``<dynamic-code>``,
so an error in a function defined in a script or a notebook showed
``File "<dynamic-code>", line 6`` on the client. Here code objects keep
their file name, and code written in a notebook or IPython cell (which has no
file the engine could read: its lines live only in the client's
``linecache``) carries its lines along, so the engine's traceback shows
them as it would locally.
"""

from __future__ import annotations

import copyreg
import io
import linecache
import types
from typing import Any

import cloudpickle
from cloudpickle import cloudpickle as _cp

_DYNAMIC = "<dynamic-code>"
MAX_LINES = 400  # a longer function ships without its source lines


def _span(code: types.CodeType) -> tuple[int, int]:
    last = code.co_firstlineno
    for _, _, line in code.co_lines():
        if line is not None and line > last:
            last = line
    return code.co_firstlineno, last


# Where cloudpickle's code reduction puts the file name (it depends on the Python version).
_AT = _cp._code_reduce(_span.__code__)[1].index(_DYNAMIC)


def _reduce_code(code: types.CodeType) -> tuple:
    make, args = _cp._code_reduce(code)
    filename = code.co_filename
    args = (*args[:_AT], filename, *args[_AT + 1:])
    entry = linecache.cache.get(filename)
    if entry is None or len(entry) != 4 or entry[1] is not None:
        return make, args  # a real file (or nothing known): the name is enough
    first, last = _span(code)
    if last - first >= MAX_LINES:
        return make, args
    return _code_with_source, (filename, first, tuple(entry[2][first - 1:last]), args)


def _code_with_source(filename: str, first: int, lines: tuple[str, ...], args: tuple) -> types.CodeType:
    """On the engine: remember the lines of a cell-defined function for its tracebacks."""
    remember(filename, first, lines)
    return types.CodeType(*args)


def remember(filename: str, first: int, lines: tuple[str, ...] | list[str]) -> None:
    """Put ``lines`` (starting at line ``first``) into ``linecache`` for a file that does not exist here."""
    entry = linecache.cache.get(filename)
    if entry is not None and (len(entry) != 4 or entry[1] is not None):
        return  # a real file known here: its own lines win
    if entry is None and linecache.getlines(filename):
        return  # a real file readable here
    known = list(entry[2]) if entry is not None else []
    end = first - 1 + len(lines)
    if len(known) < end:
        known.extend(["\n"] * (end - len(known)))
    known[first - 1:end] = lines
    linecache.cache[filename] = (sum(map(len, known)), None, known, filename)


def _table() -> dict:
    # A plain dict, not cloudpickle's ChainMap: the C pickler looks a type up in it for
    # nearly every object it writes, and a dict answers without running Python code.
    return {**copyreg.dispatch_table, **cloudpickle.Pickler._dispatch_table, types.CodeType: _reduce_code}


class Pickler(cloudpickle.Pickler):
    dispatch_table = _table()


_copyreg_size = len(copyreg.dispatch_table)


def dumps(obj: Any, protocol: int = 5, buffer_callback: Any = None) -> bytes:
    """``cloudpickle.dumps``, with code objects that keep their file name (and cell lines)."""
    global _copyreg_size
    if len(copyreg.dispatch_table) != _copyreg_size:  # a library registered a reducer since
        _copyreg_size = len(copyreg.dispatch_table)
        Pickler.dispatch_table = _table()
    with io.BytesIO() as file:
        Pickler(file, protocol=protocol, buffer_callback=buffer_callback).dump(obj)
        return file.getvalue()
