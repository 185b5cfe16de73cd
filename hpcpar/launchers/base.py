"""The launcher interface, and the registry that maps names to launcher classes."""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from importlib.metadata import entry_points
from typing import Any, ClassVar

ENTRY_POINT_GROUP = "hpcpar.launchers"

# Native states are mapped to these, whatever the system.
PENDING, RUNNING, DONE, FAILED, CANCELLED, HELD, UNKNOWN = (
    "pending",
    "running",
    "done",
    "failed",
    "cancelled",
    "held",
    "unknown",
)


class LauncherError(RuntimeError):
    """A launcher could not start, poll or stop what it manages."""


class Launcher(ABC):
    """Starts one set of processes (the controller, or a set of engines) and stops it.

    A launcher must be able to rebuild itself from :meth:`to_dict` in another
    process, so that ``hpcpar stop`` works after the starting process is gone.
    """

    name: ClassVar[str] = ""

    def __init__(self, *, role: str, n: int = 1, **options: Any) -> None:
        if role not in ("controller", "engines", "forwarders"):
            raise ValueError(f"role must be 'controller', 'engines' or 'forwarders', not {role!r}")
        self.role = role
        self.n = n
        self.options = options

    @abstractmethod
    def start(self, command: list[str], env: dict[str, str], log_path: str) -> None:
        """Start ``n`` copies of ``command`` (a controller has n=1)."""

    @abstractmethod
    def stop(self, timeout: float = 5.0) -> None:
        """Stop everything this launcher started; tolerate what is already gone."""

    @abstractmethod
    def status(self) -> str:
        """One of pending, running, done, failed, cancelled, held, unknown."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state; ``from_dict`` must rebuild a launcher that can stop."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> Launcher: ...

    def describe(self) -> str:
        return f"{self.name} {self.role}"

    def labels(self) -> list[str]:
        """What names this launcher's jobs or processes to a user: batch job ids, else pids
        (``processes`` is a list on some launchers, a method returning one on others)."""
        ids = list(getattr(self, "job_ids", None) or [])
        if ids:
            return [str(i) for i in ids]
        starter = getattr(self, "starter", None)  # one mpiexec for all ranks
        if starter is not None:
            return [str(starter.pid)]
        procs = getattr(self, "processes", None) or []
        if callable(procs):
            procs = procs()
        return [str(getattr(p, "pid", p)) for p in procs]


_BUILTIN = {
    "local": "hpcpar.launchers.local:LocalLauncher",
    "mpi": "hpcpar.launchers.mpi:MPILauncher",
    "ssh": "hpcpar.launchers.ssh:SSHLauncher",
}


def _registry() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name.lower(), ep)
    return found


def launcher_names() -> list[str]:
    return sorted(set(_registry()) | set(_BUILTIN))


def get_launcher_class(name: str) -> type[Launcher]:
    key = name.lower()
    reg = _registry()
    if key in reg:
        return reg[key].load()
    if key in _BUILTIN:
        module, _, attr = _BUILTIN[key].partition(":")
        import importlib

        return getattr(importlib.import_module(module), attr)
    close = difflib.get_close_matches(key, launcher_names(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise LauncherError(
        f"unknown launcher {name!r}{hint} (available: {', '.join(launcher_names())})"
    )
