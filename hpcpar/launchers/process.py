"""Process references that survive a restart of the process that started them.

A PID alone is not enough to stop a process later: PIDs are reused. We keep
the kernel's start time next to each PID and only signal a PID whose start
time still matches.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict, dataclass


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    rest = stat[stat.rfind(b")") + 2 :].split()
    if len(rest) < 20 or rest[0] == b"Z":
        return None
    return int(rest[19])


@dataclass
class ProcessRef:
    pid: int
    start_time: int | None

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        return cls(pid, process_start_time(pid))

    def alive(self) -> bool:
        now = process_start_time(self.pid)
        return now is not None and (self.start_time is None or now == self.start_time)

    def signal(self, sig: int) -> bool:
        if not self.alive():
            return False
        try:
            os.kill(self.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def to_dict(self) -> dict:
        return asdict(self)


def stop_processes(refs: list[ProcessRef], timeout: float = 5.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to every live process, wait up to ``timeout``, then SIGKILL the rest."""
    live = [r for r in refs if r.signal(sig)]
    deadline = time.monotonic() + timeout
    while live and time.monotonic() < deadline:
        _reap(live)
        live = [r for r in live if r.alive()]
        if live:
            time.sleep(0.02)
    for r in live:
        r.signal(signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while live and time.monotonic() < deadline:
        _reap(live)
        live = [r for r in live if r.alive()]
        if live:
            time.sleep(0.02)


def _reap(refs: list[ProcessRef]) -> None:
    """Collect our own exited children so they do not linger as zombies."""
    for r in refs:
        try:
            os.waitpid(r.pid, os.WNOHANG)
        except ChildProcessError:
            pass
