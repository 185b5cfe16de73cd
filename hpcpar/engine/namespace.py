"""The engine's user namespace: a fresh ``__main__`` module that persists across tasks."""

from __future__ import annotations

import builtins
import sys
import types
from collections.abc import Callable
from typing import Any

from ..serialize import Rebinder


class Namespace:
    def __init__(self) -> None:
        self.module = types.ModuleType("__main__")
        # Code that pickles classes defined with execute() looks them up here.
        sys.modules["__main__"] = self.module
        self.rebinder = Rebinder(self.module.__dict__)
        # Called after each reset: the IPython shell, if any, puts its own names back.
        self.after_reset: list[Callable[[], None]] = []
        self.reset()

    @property
    def globals(self) -> dict[str, Any]:
        return self.module.__dict__

    def reset(self, extra: dict[str, Any] | None = None) -> None:
        ns = self.module.__dict__
        ns.clear()
        # A module's standard attributes, as an interactive session's __main__ has them: code that
        # reads __main__.__spec__ (multiprocessing's spawn, e.g. a dask Nanny) finds it.
        ns.update({"__name__": "__main__", "__builtins__": builtins, "__doc__": None, "__spec__": None,
                   "__loader__": None, "__package__": None})
        self.rebinder = Rebinder(ns)
        if extra:
            ns.update(extra)
        self.extra = dict(extra or {})
        for hook in self.after_reset:
            hook()


_current: Namespace | None = None


def current() -> Namespace:
    global _current
    if _current is None:
        _current = Namespace()
    return _current
