"""Local launcher: the controller or N engines as processes on this machine."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from ..paths import private_file
from .base import DONE, RUNNING, Launcher
from .process import ProcessRef, stop_processes


class LocalLauncher(Launcher):
    name = "local"

    def __init__(self, *, role: str, n: int = 1, **options: Any) -> None:
        super().__init__(role=role, n=n, **options)
        self.processes: list[ProcessRef] = []
        self._popens: list[subprocess.Popen] = []

    def start(self, command: list[str], env: dict[str, str], log_path: str) -> None:
        full_env = {**os.environ, **env}
        for i in range(self.n):
            path = log_path.replace("{index}", str(i))
            with open(private_file(path), "ab", buffering=0) as log:  # 0600: logs may show task data
                # A new session: Ctrl-C in the starting terminal reaches only
                # `hpcpar start`, which then stops everything in order.
                proc = subprocess.Popen(
                    command,
                    env=full_env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            self._popens.append(proc)
            self.processes.append(ProcessRef.of(proc.pid))

    def stop(self, timeout: float = 5.0) -> None:
        stop_processes(self.processes, timeout=timeout)
        for p in self._popens:
            try:
                p.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass

    def alive(self) -> list[ProcessRef]:
        for p in self._popens:
            p.poll()
        return [r for r in self.processes if r.alive()]

    def status(self) -> str:
        return RUNNING if self.alive() else DONE

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "n": self.n, "processes": [r.to_dict() for r in self.processes]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LocalLauncher:
        self = cls(role=data.get("role", "engines"), n=int(data.get("n", 0)))
        self.processes = [ProcessRef(int(p["pid"]), p.get("start_time")) for p in data["processes"]]
        return self
