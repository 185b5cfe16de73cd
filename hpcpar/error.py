"""Exceptions, named as in ipyparallel so ``except ipp.RemoteError`` keeps working."""

from __future__ import annotations

import builtins
from typing import Any

TimeoutError = builtins.TimeoutError


class HpcparError(Exception):
    """Base class of hpcpar's own errors."""


# ipyparallel's name for the base class.
IPythonError = HpcparError


class KernelError(HpcparError):
    pass


class EngineError(KernelError):
    """An engine died or went away while it held a task."""

    def __init__(self, message: str = "", engine_info: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.engine_info = engine_info or {}
        self.ename = "EngineError"
        self.evalue = message
        self.traceback = message


class NoEnginesRegistered(KernelError):
    def __init__(self, message: str = "") -> None:
        super().__init__(
            message
            or "this cluster has no engines yet: call rc.wait_for_engines(n) before sending work"
        )


class TaskAborted(KernelError):
    pass


class TaskTimeout(KernelError):
    pass


class TaskRejectError(KernelError):
    pass


class UnmetDependency(KernelError):
    pass


class ImpossibleDependency(UnmetDependency):
    pass


class DependencyTimeout(ImpossibleDependency, TaskTimeout):
    """A task's dependencies were not met within its ``timeout``.

    Also a TaskTimeout, so ``except TaskTimeout`` (what ipyparallel raises)
    and ``except DependencyTimeout`` (what its docs promise) both work."""


class InvalidDependency(ImpossibleDependency):
    pass


class RemoteError(KernelError):
    """An exception raised by user code on an engine.

    ``ename``/``evalue`` name the remote exception; ``traceback`` is the
    remote traceback text, frames from the engine's side included.
    """

    engine_info: dict[str, Any]

    def __init__(
        self,
        ename: str,
        evalue: str,
        traceback: str | list[str] = "",
        engine_info: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(traceback, list):
            traceback = "\n".join(traceback)
        super().__init__(ename, evalue)
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback
        self.engine_info = engine_info or {}

    def __repr__(self) -> str:
        engine = self.engine_info.get("engine_id")
        where = f"[{engine}:{self.engine_info.get('method', 'apply')}]" if engine is not None else ""
        return f"{where}{self.ename}({self.evalue})"

    def __str__(self) -> str:
        return f"{self.ename}({self.evalue})"

    def render_traceback(self) -> list[str]:
        return (self.traceback or f"{self.ename}: {self.evalue}").splitlines()

    # IPython calls this to show the remote traceback instead of the local one.
    def _render_traceback_(self) -> list[str]:
        engine = self.engine_info.get("engine_id")
        head = [f"[Engine {engine}] {self.ename}: {self.evalue}"] if engine is not None else []
        return head + self.render_traceback()

    def print_traceback(self) -> None:
        print("\n".join(self._render_traceback_()))


class CompositeError(RemoteError):
    """Errors from several engines, raised together.

    ``elist`` holds one ``(ename, evalue, traceback, engine_info)`` tuple per
    failed engine, as in ipyparallel; ``errors`` holds the exception objects.
    """

    tb_limit = 4

    def __init__(self, message: str, errors: list[BaseException]) -> None:
        self.errors = list(errors)
        self.elist = [
            (
                getattr(e, "ename", type(e).__name__),
                getattr(e, "evalue", str(e)),
                getattr(e, "traceback", ""),
                getattr(e, "engine_info", {}),
            )
            for e in self.errors
        ]
        first = self.elist[0] if self.elist else ("", "", "", {})
        super().__init__(first[0], first[1], first[2], first[3])
        self.msg = message
        self.args = (message, self.elist)

    def __str__(self) -> str:
        lines = [self.msg]
        for ename, evalue, _tb, info in self.elist:
            lines.append(f"[{info.get('engine_id', '?')}:{info.get('method', '?')}]: {ename}: {evalue}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"CompositeError({len(self.elist)} errors)"

    def _render_traceback_(self) -> list[str]:
        lines: list[str] = []
        for i, e in enumerate(self.errors):
            if i >= self.tb_limit:
                lines.append(f"... {len(self.errors) - i} more exceptions ...")
                break
            render = getattr(e, "_render_traceback_", None)
            lines.extend(render() if render else [repr(e)])
        return lines

    def raise_exception(self, excid: int = 0) -> None:
        raise self.errors[excid]


class AlreadyDisplayedError(CompositeError):
    """Errors whose tracebacks were already shown (streamed by %px): IPython
    shows only this one-line summary, so no traceback appears twice."""

    def _render_traceback_(self) -> list[str]:
        engines = ", ".join(str(info.get("engine_id", "?")) for *_, info in self.elist)
        n = len(self.elist)
        return [f"AlreadyDisplayedError: {n} error{'s' if n != 1 else ''} on engine{'s' if n != 1 else ''} "
                f"[{engines}] (tracebacks above)"]


def collect_exceptions(results: list[Any], method: str) -> list[Any]:
    """Raise a CompositeError if any result is an exception; else return results."""
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise CompositeError(f"one or more exceptions raised in: {method}", errors)
    return results
