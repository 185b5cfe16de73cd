"""Turning Python objects into (pickle, buffers) and back.

Pickle protocol 5 lets numpy arrays (and anything exposing PickleBuffer)
travel as separate zero-copy frames instead of inside the pickle.
Functions, lambdas and closures go through cloudpickle by default.
"""

from __future__ import annotations

import pickle
import types
from typing import Any

import cloudpickle

# Buffers smaller than this stay inside the pickle: a frame costs more than a copy.
OUT_OF_BAND_MIN = 1024
PICKLERS = ("cloudpickle", "pickle")
# Pickled the same way by both picklers; the plain one skips cloudpickle's set-up,
# which costs more than the pickling of a small result itself.
_PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes})


class SerializationError(Exception):
    """An object could not be pickled or unpickled; the message says which and why."""


def dumps(obj: Any, pickler: str = "cloudpickle") -> tuple[bytes, list[memoryview]]:
    buffers: list[memoryview] = []

    def keep(pb: pickle.PickleBuffer) -> bool:
        raw = pb.raw()
        if raw.nbytes < OUT_OF_BAND_MIN:
            return True  # serialize in-band
        buffers.append(raw)
        return False

    try:
        if pickler == "pickle" or type(obj) in _PLAIN:
            data = pickle.dumps(obj, protocol=5, buffer_callback=keep)
        else:
            data = cloudpickle.dumps(obj, protocol=5, buffer_callback=keep)
    except Exception as e:
        raise SerializationError(
            f"could not serialize {_describe(obj)}: {type(e).__name__}: {e}"
        ) from e
    return data, buffers


def loads(data: Any, buffers: list[Any] = ()) -> Any:
    try:
        return pickle.loads(data, buffers=buffers)
    except Exception as e:
        raise SerializationError(f"could not deserialize: {type(e).__name__}: {e}") from e


def _describe(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) < 80 else text[:77] + "..."


def is_interactive(obj: Any) -> bool:
    """A function defined in ``__main__`` (a notebook, a script, the REPL)."""
    return isinstance(obj, types.FunctionType) and obj.__module__ == "__main__"


class Rebinder:
    """Gives functions defined interactively the engine's namespace as globals.

    cloudpickle ships a function from ``__main__`` with a private copy of the
    globals it references. On an engine we rebuild it over the engine's
    namespace instead, so names pushed to the engine are visible and
    ``global x`` assignments persist, as in ipyparallel. Globals captured on
    the client fill in names the engine does not define, and replace values
    that were themselves filled in earlier (so a helper redefined on the
    client is updated), but never a value pushed or assigned on the engine.
    """

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self._filled: dict[str, Any] = {}

    def rebind(self, obj: Any, _memo: dict[int, Any] | None = None) -> Any:
        if not is_interactive(obj):
            inner = getattr(obj, "f", None)
            if hasattr(obj, "__wrapped__") and inner is not None and inner is not obj:
                obj.f = self.rebind(inner, _memo)  # a @require/@depend wrapper
            return obj
        memo = {} if _memo is None else _memo
        if id(obj) in memo:
            return memo[id(obj)]
        ns = self.namespace
        new = types.FunctionType(obj.__code__, ns, obj.__name__, obj.__defaults__, obj.__closure__)
        memo[id(obj)] = new
        new.__kwdefaults__ = obj.__kwdefaults__
        new.__qualname__ = obj.__qualname__
        new.__doc__ = obj.__doc__
        new.__dict__.update(obj.__dict__)
        new.__module__ = "__main__"
        captured = obj.__globals__
        if captured is not ns:
            for name in _global_names(obj.__code__):
                if name not in captured or name.startswith("__"):
                    continue
                value = captured[name]
                if name in ns and (name not in self._filled or ns[name] is not self._filled[name]):
                    continue  # defined on the engine: the engine's value wins
                value = self.rebind(value, memo)
                ns[name] = value
                self._filled[name] = value
        return new


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names
