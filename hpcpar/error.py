"""Exceptions, named as in ipyparallel so ``except ipp.RemoteError`` keeps working."""

from __future__ import annotations

import builtins
from typing import Any

TimeoutError = builtins.TimeoutError


class HpcparError(Exception):
    """Base class of hpcpar's own errors."""


# ipyparallel's name for the base class.
IPythonError = HpcparError


class PoolStopped(HpcparError, TimeoutError):
    """The elastic pool stopped submitting engine jobs after repeated failures, so the
    engines waited for will not come; the message quotes the failed job's output. A
    TimeoutError, so code written for ipyparallel's ``wait_for_engines`` still catches it."""


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
        # Not super(): in the Remote* classes below the next class is EngineError & co.,
        # whose constructors take other arguments.
        Exception.__init__(self, ename, evalue)
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
    Tracebacks are drawn for the first ``tb_limit`` errors only, then a count
    of the others.
    """

    tb_limit = 4

    def __init__(self, message: str, errors: list[BaseException]) -> None:
        flat: list[BaseException] = []
        for e in errors:  # a CompositeError among the errors contributes its own errors
            flat.extend(e.errors if isinstance(e, CompositeError) else [e])
        self.errors = flat
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

    @staticmethod
    def _where(info: dict[str, Any]) -> str:
        if not info:
            return "[Engine Exception]"
        return f"[{info.get('engine_id', '?')}:{info.get('method', '?')}]: "

    def _more(self) -> list[str]:
        extra = len(self.elist) - self.tb_limit
        return [f"... {extra} more exceptions ..."] if extra > 0 else []

    def __str__(self) -> str:
        lines = [str(self.msg)]
        for ename, evalue, _tb, info in self.elist[: self.tb_limit]:
            lines.append(f"{self._where(info)}{ename}: {evalue}")
        return "\n".join(lines + self._more())

    def __repr__(self) -> str:
        return f"CompositeError({len(self.elist)})"

    def render_traceback(self, excid: int | None = None) -> list[str]:
        """Each error's engine and remote traceback (the first ``tb_limit``), or only error ``excid``."""
        if excid is not None:
            chosen = [self._entry(excid)]
        else:
            chosen = self.elist[: self.tb_limit]
        lines: list[str] = []
        for ename, evalue, tb, info in chosen:
            lines.append(self._where(info))
            lines.extend((tb or f"{ename}: {evalue}").splitlines())
            if excid is None:
                lines.append("")
        return lines + (self._more() if excid is None else [])

    def _render_traceback_(self) -> list[str]:
        return self.render_traceback()

    def print_traceback(self, excid: int | None = None) -> None:
        print("\n".join(self.render_traceback(excid)))

    def _entry(self, excid: int) -> tuple:
        try:
            return self.elist[excid]
        except (IndexError, TypeError):
            raise IndexError(f"no exception with index {excid}: this CompositeError holds "
                             f"{len(self.elist)}") from None

    def raise_exception(self, excid: int = 0) -> None:
        """Raise error ``excid`` on its own (a RemoteError, or its Remote* class)."""
        self._entry(excid)
        raise self.errors[excid]


class AlreadyDisplayedError(CompositeError):
    """Errors whose tracebacks were already shown (streamed by %px): IPython
    shows only this one-line summary, so no traceback appears twice."""

    def _render_traceback_(self) -> list[str]:
        engines = ", ".join(str(info.get("engine_id", "?")) for *_, info in self.elist)
        n = len(self.elist)
        return [f"AlreadyDisplayedError: {n} error{'s' if n != 1 else ''} on engine{'s' if n != 1 else ''} "
                f"[{engines}] (tracebacks above)"]


# The errors hpcpar itself reports for a task (engine gone, dependency, timeout, abort...),
# as received by a client. ipyparallel delivers these as a RemoteError whose ``ename``
# names them; these classes are both, so ``except RemoteError`` (ipyparallel's idiom) and
# ``except EngineError`` (the specific class) catch them.


class RemoteEngineError(RemoteError, EngineError):
    """The engine holding the task died or went away (``ename`` 'EngineError')."""


class RemoteTaskAborted(RemoteError, TaskAborted):
    """The task was aborted before it ran."""


class RemoteTaskTimeout(RemoteError, TaskTimeout):
    """The task did not start in time."""


class RemoteUnmetDependency(RemoteError, UnmetDependency):
    """The task's dependency is not met on that engine."""


class RemoteImpossibleDependency(RemoteError, ImpossibleDependency):
    """The task's dependencies can never be met."""


class RemoteDependencyTimeout(RemoteError, DependencyTimeout):
    """The task's dependencies were not met within its timeout."""


class RemoteInvalidDependency(RemoteError, InvalidDependency):
    """The task depends on a task this cluster has no record of."""


class RemoteTaskRejectError(RemoteError, TaskRejectError):
    """No engine accepted the task."""


class RemoteKeyError(RemoteError, KeyError):
    """The hub has no record of a msg_id (purged, never submitted, or another cluster's)."""


REMOTE_CLASSES: dict[str, type[RemoteError]] = {
    "EngineError": RemoteEngineError,
    "TaskAborted": RemoteTaskAborted,
    "TaskTimeout": RemoteTaskTimeout,
    "UnmetDependency": RemoteUnmetDependency,
    "ImpossibleDependency": RemoteImpossibleDependency,
    "DependencyTimeout": RemoteDependencyTimeout,
    "InvalidDependency": RemoteInvalidDependency,
    "TaskRejectError": RemoteTaskRejectError,
    "KeyError": RemoteKeyError,
}


def remote_error(
    ename: str,
    evalue: str,
    traceback: str | list[str] = "",
    engine_info: dict[str, Any] | None = None,
    own: bool = True,
) -> RemoteError:
    """The exception a client raises for a failed task. ``own``: reported by hpcpar itself
    (controller, hub, engine machinery), so it also gets its specific class; a user's own
    exception of the same name stays a plain RemoteError, as in ipyparallel."""
    cls = REMOTE_CLASSES.get(ename, RemoteError) if own else RemoteError
    return cls(ename, evalue, traceback or f"{ename}: {evalue}", engine_info)


def collect_exceptions(results: list[Any], method: str) -> list[Any]:
    """Raise a CompositeError if any result is an exception; else return results."""
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise CompositeError(f"one or more exceptions raised in: {method}", errors)
    return results
