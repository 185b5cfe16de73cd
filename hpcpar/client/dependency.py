"""Dependencies of load-balanced tasks.

Graph dependencies (``after``: run after these tasks; ``follow``: run where
these tasks ran) are resolved by the controller. Functional dependencies
(``@require``, ``@depend``) run on the engine: if one is not met the task
raises UnmetDependency there, and the controller sends it elsewhere, never
back to that engine.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from ..error import UnmetDependency


class Dependency(set):
    """A set of msg_ids plus how to judge them.

    ``all``: every task must be done (else any one). ``success`` / ``failure``:
    whether a task that succeeded / failed counts as met.
    """

    def __init__(self, dependencies: Any = (), all: bool = True, success: bool = True,
                 failure: bool = False) -> None:
        super().__init__(_msg_ids(dependencies))
        if not (success or failure):
            raise ValueError("a Dependency must count success, failure, or both as met")
        self.all = all
        self.success = success
        self.failure = failure

    def as_dict(self) -> dict[str, Any]:
        return {"msg_ids": sorted(self), "all": self.all, "success": self.success, "failure": self.failure}

    def __repr__(self) -> str:
        return f"Dependency({sorted(self)}, all={self.all}, success={self.success}, failure={self.failure})"


def _msg_ids(deps: Any) -> list[str]:
    from .asyncresult import AsyncResult

    if deps is None:
        return []
    if isinstance(deps, (str, AsyncResult)):
        deps = [deps]
    out: list[str] = []
    for d in deps:
        if isinstance(d, AsyncResult):
            out.extend(d.msg_ids)
        elif isinstance(d, str):
            out.append(d)
        elif isinstance(d, Iterable):
            out.extend(_msg_ids(d))
        else:
            raise TypeError(f"a dependency must be a msg_id, an AsyncResult or a list of them, not {d!r}")
    return out


def dependency_spec(value: Any) -> dict[str, Any] | None:
    """The JSON form sent in a task's header, or None for no dependency."""
    if value is None:
        return None
    dep = value if isinstance(value, Dependency) else Dependency(value)
    return dep.as_dict() if dep else None


class dependent:
    """A function that runs only if ``df(*dargs, **dkwargs)`` is true on the engine."""

    def __init__(self, f: Any, df: Any, *dargs: Any, **dkwargs: Any) -> None:
        functools.update_wrapper(self, f)  # first: it copies f.__dict__ over ours
        self.f = f
        self.df = df
        self.dargs = dargs
        self.dkwargs = dkwargs

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.df(*self.dargs, **self.dkwargs):
            raise UnmetDependency(f"{getattr(self.df, '__name__', self.df)} is false on this engine")
        return self.f(*args, **kwargs)


def depend(df: Any, *dargs: Any, **dkwargs: Any):
    """Decorator: run the task only on engines where ``df(*dargs, **dkwargs)`` is true."""

    def decorator(f: Any) -> dependent:
        return dependent(f, df, *dargs, **dkwargs)

    return decorator


def require(*objects: Any, **mapping: Any):
    """Decorator: what the task needs on the engine, shipped with it.

    Modules (by name or module object) are imported on the engine before the
    task runs; on an engine that cannot import one the task is sent elsewhere
    (UnmetDependency). Functions given positionally are bound under their
    ``__name__``, and any object given by keyword under that name, in the
    engine's namespace, where the task (and later tasks) see them.
    """
    import types

    names: list[str] = []
    bound: dict[str, Any] = {}
    for obj in objects:
        if isinstance(obj, types.ModuleType):
            obj = obj.__name__
        if isinstance(obj, str):
            names.append(obj)
        elif callable(obj) and hasattr(obj, "__name__"):
            bound[obj.__name__] = obj
        else:
            raise TypeError(f"require() takes modules, module names and functions positionally; give other "
                            f"objects by keyword, e.g. require(name=obj), not {type(obj).__name__}")
    bound.update(mapping)
    needs = _Requirements(names, bound)

    def decorator(f: Any) -> dependent:
        return dependent(_Bound(f, needs), needs)

    return decorator


class _Requirements:
    """Run on the engine as the task's dependency check: import the modules and
    bind the objects; a missing module makes the dependency unmet."""

    def __init__(self, modules: list[str], objects: dict[str, Any]) -> None:
        self.modules = modules
        self.objects = objects
        self.__name__ = "require(" + ", ".join([*modules, *objects]) + ")"

    def namespace(self) -> dict[str, Any]:
        from .reference import _namespace

        return _namespace()

    def bindings(self) -> dict[str, Any]:
        """Name -> value for the engine's namespace: top-level modules, then the objects."""
        import importlib

        out: dict[str, Any] = {}
        for name in self.modules:
            try:
                importlib.import_module(name)
            except ImportError as e:
                raise UnmetDependency(f"cannot import {name} on this engine: {e}") from None
            top = name.split(".")[0]
            out[top] = importlib.import_module(top)
        out.update(self.objects)
        return out

    def __call__(self) -> bool:
        ns = self.namespace()
        rebind = _rebinder(ns)
        for name, value in self.bindings().items():
            ns[name] = rebind(value)
        return True


class _Bound:
    """The task's function; its own globals also get what ``require`` binds when
    they are not the engine's namespace (a function from a module, or a closure)."""

    def __init__(self, f: Any, needs: _Requirements) -> None:
        functools.update_wrapper(self, f)
        self.f = f
        self.needs = needs

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import sys

        g = getattr(self.f, "__globals__", None)
        ns = self.needs.namespace()
        if g is not None and g is not ns:
            module = sys.modules.get(g.get("__name__", ""))
            own = module is None or module.__dict__ is not g  # a private copy cloudpickle made
            for name in [*self.needs.modules, *self.needs.objects]:
                key = name.split(".")[0]
                if key in ns and (own or key not in g):
                    g[key] = ns[key]
        return self.f(*args, **kwargs)


def _rebinder(ns: dict[str, Any]) -> Any:
    """The engine's Rebinder when ``ns`` is its namespace (interactive functions then
    see the engine's names), else no change."""
    from ..engine import namespace

    current = namespace._current
    if current is not None and current.globals is ns:
        return current.rebinder.rebind
    return lambda value: value
