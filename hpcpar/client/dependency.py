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


def _importable(*names: str) -> bool:
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            return False
    return True


def require(*modules: Any, **mapping: Any):
    """Decorator: run the task only on engines that can import ``modules``.

    Modules (names or module objects) are imported on the engine before the
    task runs and are visible to it; on an engine that lacks one the task is
    sent elsewhere.
    """
    names = [m if isinstance(m, str) else m.__name__ for m in modules]

    def decorator(f: Any) -> dependent:
        return dependent(_with_imports(f, names), _importable, *names)

    return decorator


class _with_imports:
    """Import modules into the function's globals right before calling it."""

    def __init__(self, f: Any, names: list[str]) -> None:
        functools.update_wrapper(self, f)
        self.f = f
        self.names = names

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import importlib

        g = getattr(self.f, "__globals__", None)
        for name in self.names:
            module = importlib.import_module(name)
            if g is not None:
                g.setdefault(name.split(".")[0], importlib.import_module(name.split(".")[0]))
            del module
        return self.f(*args, **kwargs)
