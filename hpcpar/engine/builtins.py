"""Functions the client applies on engines for push, pull, map and scatter.

They live in an importable module so they travel by reference (a few bytes)
rather than by value.
"""

from __future__ import annotations

from typing import Any

from .namespace import current


def push(ns: dict[str, Any]) -> None:
    space = current()
    for name, value in ns.items():
        space.globals[name] = space.rebinder.rebind(value)


def pull(names: str | list[str] | tuple[str, ...]) -> Any:
    g = current().globals
    if isinstance(names, str):
        return _lookup(g, names)
    return [_lookup(g, n) for n in names]


def _lookup(g: dict[str, Any], name: str) -> Any:
    """A name, or (as ipyparallel's pull) an expression such as ``"obj.attr"`` or ``"len(x)"``,
    evaluated in the engine's namespace."""
    if name in g:
        return g[name]
    if name.isidentifier():
        raise NameError(f"name {name!r} is not defined on this engine")
    # eval adds __builtins__ to the globals it is given: never to the engine's own namespace
    return eval(name, g if "__builtins__" in g else {**g})


def map_chunk(f: Any, *seqs: Any) -> list[Any]:
    f = current().rebinder.rebind(f)
    return list(map(f, *seqs))


def execute_file(code: str, filename: str) -> None:
    exec(compile(code, filename, "exec"), current().globals)
