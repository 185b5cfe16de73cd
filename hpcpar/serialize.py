"""Turning Python objects into (pickle, buffers) and back.

Pickle protocol 5 lets numpy arrays (and anything exposing PickleBuffer)
travel as separate zero-copy frames instead of inside the pickle.
Functions, lambdas and closures go through cloudpickle by default.
"""

from __future__ import annotations

import builtins
import io
import pickle
import sys
import types
import weakref
from typing import Any

import cloudpickle

from . import codepickle

# Buffers smaller than this stay inside the pickle: a frame costs more than a copy.
OUT_OF_BAND_MIN = 1024
PICKLERS = ("cloudpickle", "pickle", "dill")
# Pickled the same way by both picklers; the plain one skips cloudpickle's set-up,
# which costs more than the pickling of a small result itself.
_PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes})


class SerializationError(TypeError):
    """An object could not be pickled or unpickled; the message says which and why.
    A TypeError, as pickle's "cannot pickle ..." is: code written for ipyparallel catches that."""


def dumps(obj: Any, pickler: str = "cloudpickle") -> tuple[bytes, list[memoryview]]:
    buffers: list[memoryview] = []

    def keep(pb: pickle.PickleBuffer) -> bool:
        raw = pb.raw()
        if raw.nbytes < OUT_OF_BAND_MIN:
            return True  # serialize in-band
        buffers.append(raw)
        return False

    try:
        if pickler == "pickle" or _plain(obj):
            data = pickle.dumps(obj, protocol=5, buffer_callback=keep)
        elif pickler == "dill":  # use_dill(): loading needs dill imported (it is, once use_dill ran)
            import dill

            data = dill.dumps(obj, protocol=5, recurse=True, buffer_callback=keep)  # only the globals used
        else:
            data = codepickle.dumps(obj, protocol=5, buffer_callback=keep)  # keeps code file names
    except Exception as e:
        raise SerializationError(
            f"could not serialize {_describe(obj)}: {type(e).__name__}: {e}"
        ) from e
    return data, buffers


def _plain(obj: Any, depth: int = 2) -> bool:
    """Small data that plain pickle writes exactly as cloudpickle would."""
    t = type(obj)
    if t in _PLAIN or t is _Pickled:
        return True
    if depth == 0 or t not in (tuple, list, dict) or len(obj) > 32:
        return False
    # Loops, not all() over a generator: this runs for the arguments of every apply.
    if t is dict:
        for k, v in obj.items():
            if type(k) is not str or not _plain(v, depth - 1):
                return False
        return True
    for v in obj:
        if not _plain(v, depth - 1):
            return False
    return True


def loads(data: Any, buffers: list[Any] = ()) -> Any:
    try:
        return pickle.loads(data, buffers=buffers)
    except Exception as e:
        if getattr(e, "hpcpar_user_error", False):
            raise  # e.g. a Reference naming nothing on this engine: the user's NameError
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


class _Pickled:
    """A function pickled earlier, unpickled in place inside the message's pickle."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return pickle.loads, (self.data,)


_MISSING = object()
_BASE_GLOBALS = ("__package__", "__name__", "__path__", "__file__")  # cloudpickle ships these too


class FunctionCache:
    """The pickle of an interactively defined function, made once and reused
    while nothing it was made from has changed.

    cloudpickle ships a function from ``__main__`` by value (code, defaults, the
    globals it uses) on every call, which costs more than the rest of a small
    request. Only functions whose pickle depends on nothing mutable are cached:
    no closure and no attributes; defaults, and the globals the code names,
    that are plain immutable values (None, numbers, str, bytes) or imported
    modules (pickled by name). Each use checks, by identity, the code, name,
    qualname, doc, annotations, defaults and every such global (and, if a
    module is used, that no module was imported since); anything else is
    pickled afresh as before.
    """

    def __init__(self) -> None:
        self._entries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # Weak: a session that redefines functions for hours makes a new code object each time.
        self._names: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def wrap(self, f: Any) -> Any:
        """``f``, or a stand-in that unpickles to the same function, cheaper to pickle."""
        if not is_interactive(f):
            return f
        found = self._fingerprint(f)
        if found is None:
            return f
        fingerprint, modules = found
        # Compared by identity, as a tuple of ids in one C-level comparison (this runs on
        # every apply). The entry holds its fingerprint's objects, so no other object can
        # have one of those ids while the entry exists.
        ids = tuple(map(id, fingerprint))
        entry = self._entries.get(f)
        if entry is not None and entry[0] == ids and entry[1] == modules:
            return entry[3]
        try:
            stand_in = _Pickled(codepickle.dumps(f, protocol=5))
        except Exception:
            return f  # let the caller's own pickling report it
        self._entries[f] = (ids, modules, fingerprint, stand_in)
        return stand_in

    def _fingerprint(self, f: types.FunctionType) -> tuple[tuple, int | None] | None:
        """What ``f``'s pickle is made from, to compare by identity, and the number of
        imported modules if it uses any; None if ``f`` cannot be cached."""
        if f.__closure__ is not None or f.__dict__:
            return None
        defaults = f.__defaults__
        kwdefaults = f.__kwdefaults__
        if (defaults and any(type(v) not in _PLAIN for v in defaults)) or (
            kwdefaults and any(type(v) not in _PLAIN for v in kwdefaults.values())
        ):
            return None
        code = f.__code__
        names = self._names.get(code)
        if names is None:
            names = self._names[code] = (*_BASE_GLOBALS, *sorted(_global_names(code)))
        g = f.__globals__
        values = [g.get(name, _MISSING) for name in names]
        uses_module = False
        registered = None
        for value in values:
            if value is _MISSING or type(value) in _PLAIN:
                continue
            if not isinstance(value, types.ModuleType):
                return None
            if registered is None:
                registered = cloudpickle.list_registry_pickle_by_value()
            mod = value.__name__
            if mod == "__main__" or sys.modules.get(mod) is not value or any(
                mod == r or mod.startswith(r + ".") for r in registered
            ):
                return None  # pickled by value: its contents may change
            uses_module = True
        annotations = f.__annotations__
        fingerprint = (code, f.__name__, f.__qualname__, f.__doc__, defaults, kwdefaults,
                       *(kwdefaults.values() if kwdefaults else ()), annotations, *annotations.keys(),
                       *annotations.values(), *values)
        return fingerprint, (len(sys.modules) if uses_module else None)


# How a _Pickled stand-in begins in a request's pickle: a call to _pickle.loads.
_STAND_IN_CALL = b"\x8c\x07_pickle\x94\x8c\x05loads\x94\x93"
_BUILTINS_MODULES = frozenset({"builtins"})
_BUILTINS = builtins.__dict__  # what cloudpickle gives a function as __builtins__


class RequestLoader:
    """Unpickles requests on an engine, building the functions a client's
    :class:`FunctionCache` sent from a kept recipe instead of unpickling them
    again.

    Unpickling a function with cloudpickle costs more than the rest of a small
    request. A stand-in's bytes name the function exactly, so the same bytes
    always unpickle to the same thing; what the engine must not share between
    calls is anything mutable. A recipe is kept only for a function without
    closure or attributes whose defaults, annotations and globals are plain
    immutable values, builtin types or modules imported by name; each use
    builds a new function object with its own copies of the globals, keyword
    defaults and annotations dicts, as a fresh unpickle would.
    """

    MAX_RECIPES = 128
    MAX_PICKLE = 64 * 1024  # bigger pickles (large constants) are not worth keeping

    def __init__(self) -> None:
        self._recipes: dict[bytes, tuple] = {}

    def loads(self, data: Any, buffers: Any = ()) -> Any:
        if _STAND_IN_CALL not in bytes(data[:64]):
            return loads(data, buffers)
        try:
            unpickler = _RequestUnpickler(io.BytesIO(data), buffers=buffers)
            unpickler.load_function = self._function
            return unpickler.load()
        except Exception as e:
            if getattr(e, "hpcpar_user_error", False):
                raise
            raise SerializationError(f"could not deserialize: {type(e).__name__}: {e}") from e

    def _function(self, data: bytes) -> Any:
        recipe = self._recipes.get(data)
        if recipe is not None:
            f = _rebuild(recipe)
            if f is not None:
                return f
            del self._recipes[data]  # a module it uses was replaced: unpickle afresh
        f = pickle.loads(data)
        recipe = _recipe(f) if len(data) <= self.MAX_PICKLE else None
        if recipe is not None:
            if len(self._recipes) >= self.MAX_RECIPES:
                del self._recipes[next(iter(self._recipes))]  # the oldest
            self._recipes[data] = recipe
        return f


class _RequestUnpickler(pickle.Unpickler):
    """Routes the stand-in's ``_pickle.loads`` call to :meth:`RequestLoader._function`."""

    load_function: Any

    def find_class(self, module: str, name: str) -> Any:
        if module == "_pickle" and name == "loads":
            return self.load_function
        return super().find_class(module, name)


def _immutable(value: Any) -> bool:
    return type(value) in _PLAIN or (isinstance(value, type) and value.__module__ in _BUILTINS_MODULES)


def _recipe(f: Any) -> tuple | None:
    """What :func:`_rebuild` needs to make ``f`` again, or None if ``f`` holds mutable state."""
    if type(f) is not types.FunctionType or f.__module__ != "__main__" or f.__closure__ is not None or f.__dict__:
        return None
    kwdefaults = f.__kwdefaults__ or {}
    annotations = f.__annotations__
    if not all(_immutable(v) for v in (*(f.__defaults__ or ()), *kwdefaults.values(), *annotations.values())):
        return None
    modules = []
    for value in f.__globals__.values():
        if value is _BUILTINS:
            continue  # the interpreter's own, shared by every unpickled function alike
        if isinstance(value, types.ModuleType):
            if sys.modules.get(value.__name__) is not value:
                return None  # pickled by value: its contents may change
            modules.append(value)
        elif not _immutable(value):
            return None
    return (f.__code__, dict(f.__globals__), f.__name__, f.__qualname__, f.__doc__, f.__module__,
            f.__defaults__, f.__kwdefaults__ and dict(f.__kwdefaults__), dict(annotations), tuple(modules))


def _rebuild(recipe: tuple) -> Any:
    code, globals_, name, qualname, doc, module, defaults, kwdefaults, annotations, modules = recipe
    for m in modules:
        if sys.modules.get(m.__name__) is not m:
            return None
    f = types.FunctionType(code, dict(globals_), name, defaults)
    f.__qualname__ = qualname
    f.__doc__ = doc
    f.__module__ = module
    if kwdefaults:
        f.__kwdefaults__ = dict(kwdefaults)
    if annotations:
        f.__annotations__ = dict(annotations)
    return f


class PrePickled:
    """An argument pickled once, when made (ipyparallel's ``PrePickled``): sending it to many
    engines or in many tasks does not pickle it again. The engine gets the object itself."""

    def __init__(self, obj: Any) -> None:
        self.data, self.buffers = dumps(obj)

    def __reduce__(self) -> tuple:
        return loads, (self.data, [pickle.PickleBuffer(b) for b in self.buffers])


def serialize_object(obj: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """ipyparallel's name: ``obj`` as a list of frames, the pickle first (thresholds are ignored:
    hpcpar's own apply out-of-band buffers from OUT_OF_BAND_MIN bytes)."""
    data, buffers = dumps(obj)
    return [data, *buffers]


def deserialize_object(frames: list[Any], g: Any = None) -> tuple[Any, list[Any]]:
    """The inverse of ``serialize_object``: (object, frames left over), as in ipyparallel."""
    if not frames:
        raise ValueError("deserialize_object needs the frames serialize_object returned, got none")
    return loads(frames[0], list(frames[1:])), []
