"""``Reference``: a name on the engine, given as an argument of apply or map.

``view.apply(f, Reference("a"))`` calls ``f`` with the engine's own ``a``; the
name may be any expression over the engine's namespace (``Reference("g[0]")``)
and may sit anywhere in the arguments (inside lists, dicts, keyword
arguments). It is looked up when the request is unpacked on the engine, so it
costs nothing on requests that do not use it.
"""

from __future__ import annotations

from typing import Any


class Reference:
    """An engine-side name or expression, evaluated on each engine that runs the call."""

    def __init__(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"Reference takes the name of an engine-side variable as a str, not {type(name).__name__}")
        try:
            compile(name, "<Reference>", "eval")
        except SyntaxError as e:
            raise ValueError(f"Reference({name!r}) is not a Python expression: {e.msg}") from None
        self.name = name

    def __repr__(self) -> str:
        return f"<Reference: {self.name!r}>"

    def get_object(self, g: dict[str, Any] | None = None) -> Any:
        """The value of the name in ``g`` (default: this engine's namespace)."""
        return eval(self.name, _namespace() if g is None else g)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_resolve, (self.name,))


def _namespace() -> dict[str, Any]:
    """The engine's user namespace (``__main__`` when not on an engine)."""
    import sys

    from ..engine import namespace

    if namespace._current is not None:
        return namespace._current.globals
    return sys.modules["__main__"].__dict__


def _resolve(name: str) -> Any:
    """Runs while the engine unpacks a request: the Reference becomes the value."""
    try:
        return eval(name, _namespace())
    except Exception as e:
        if isinstance(e, NameError):
            e = NameError(f"{e} on this engine (Reference({name!r}))")
        # The request cannot run: the lookup's own error reaches the user, not a
        # "could not deserialize" (see serialize.loads).
        e.hpcpar_user_error = True  # type: ignore[attr-defined]
        raise e from None
