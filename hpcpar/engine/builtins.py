"""Functions the client applies on engines for push, pull, map and scatter.

They live in an importable module so they travel by reference (a few bytes)
rather than by value.
"""

from __future__ import annotations

from typing import Any

from .namespace import current


def push(ns: dict[str, Any]) -> None:
    """Bind names; a key that is an assignment target (``"obj.attr"``, ``"a[0]"``) is
    assigned as in code, as ipyparallel's push does."""
    space = current()
    g = space.globals
    for name, value in ns.items():
        value = space.rebinder.rebind(value)
        if not isinstance(name, str) or name.isidentifier():
            g[name] = value
            continue
        tmp = "_hpcpar_push_value"
        g[tmp] = value
        try:
            exec(f"{name} = {tmp}", g)
        finally:
            g.pop(tmp, None)


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
