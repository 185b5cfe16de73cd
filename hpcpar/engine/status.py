"""What an engine is doing right now, sampled from outside its main thread.

The engine's I/O thread calls :meth:`StatusSampler.sample` about once a second. It reads
the main thread's current frame (``sys._current_frames``), so it sees where user code is
even while that code is blocked in C, e.g. inside an MPI collective (mpi4py releases the
GIL there). The result travels to the controller as an ``engine_status`` message and is
what ``rc.queue_status(verbose=True)[id]["status"]`` and ``hpcpar status`` show.
"""

from __future__ import annotations

import linecache
import os
import resource
import socket
import sys
import time
from typing import Any

from .batchjob import batch_job

_ENGINE_DIR = os.path.dirname(os.path.abspath(__file__))
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def innermost_call(frame: Any) -> tuple[str | None, str | None]:
    """(``"file:line function"``, the callee as written, e.g. ``"comm.Barrier"``) of the
    innermost Python frame that is not the engine's own code; (None, None) if there is none."""
    user = None
    while frame is not None:
        if os.path.dirname(os.path.abspath(frame.f_code.co_filename)) != _ENGINE_DIR:
            user = frame
            break
        frame = frame.f_back
    if user is None:
        return None, None
    code = user.f_code
    where = f"{code.co_filename}:{user.f_lineno} {code.co_name}"
    return where, _callee(user) or code.co_name


def _callee(frame: Any) -> str | None:
    """The call expression the frame is executing, without its arguments ("time.sleep"):
    the source columns of the current instruction (Python 3.11+), cut at the first '('."""
    code = frame.f_code
    try:
        positions = list(code.co_positions())
        start, end, col, end_col = positions[frame.f_lasti // 2]
    except (AttributeError, IndexError, ValueError):
        return None
    if start is None or col is None:
        return None
    line = linecache.getline(code.co_filename, start, frame.f_globals)
    if not line:
        return None
    text = line[col:end_col] if end == start and end_col is not None else line[col:]
    name = text.split("(", 1)[0].strip()
    return name if name and len(name) <= 80 and "\n" not in name else None


def batch_job_id() -> str | None:
    """The batch job this engine runs in (an array's own id for its tasks, as the job ledger
    holds it), or None: the dashboard counts a job's engines by it."""
    job = batch_job()
    return job.job_id if job is not None else None


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the peak, where /proc is missing


class StatusSampler:
    """Builds the status dict; remembers when the running task started and the CPU time
    used since the last sample (for the cpu percentage)."""

    def __init__(self, executor: Any, main_thread: int, mpi_rank: int | None = None) -> None:
        self.executor = executor
        self.main_thread = main_thread
        self.mpi_rank = mpi_rank
        self.state_override: str | None = None  # "draining" while the engine retires
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.job_id = batch_job_id()
        self._task: str | None = None
        self._since = time.monotonic()
        self._cpu = self._cpu_seconds()
        self._at = time.monotonic()

    @staticmethod
    def _cpu_seconds() -> float:
        t = os.times()
        return t.user + t.system

    def sample(self) -> dict[str, Any]:
        now = time.monotonic()
        running = self.executor.running
        if running != self._task:
            self._task, self._since = running, now
        call = callee = None
        if running is not None:
            frame = sys._current_frames().get(self.main_thread)
            call, callee = innermost_call(frame)
        cpu = self._cpu_seconds()
        wall = max(now - self._at, 1e-6)
        percent = round(100.0 * (cpu - self._cpu) / wall, 1)
        self._cpu, self._at = cpu, now
        state = self.state_override or ("busy" if running is not None else "idle")
        return {
            "state": state,
            "task": running,
            "running_for": round(now - self._since, 1) if running is not None else 0.0,
            "call": call,
            "callee": callee,
            "rss": rss_bytes(),
            "cpu": max(percent, 0.0),
            "host": self.host,
            "pid": self.pid,
            "mpi_rank": self.mpi_rank,
            "job_id": self.job_id,
        }


def describe_activity(statuses: dict[int, dict[str, Any]]) -> str:
    """One line for people: ``"rank 0-2 in comm.Barrier for 41 s; rank 3 idle"``.

    Engines doing the same call are grouped (their running time is the shortest of them);
    MPI engines are named by rank, others by engine id.
    """
    groups: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for eid, st in statuses.items():
        if not st:
            continue
        rank = st.get("mpi_rank")
        label = "rank" if rank is not None else "engine"
        number = int(rank) if rank is not None else int(eid)
        if st.get("state") == "busy" or (st.get("state") == "draining" and st.get("task")):
            what = f"in {st.get('callee') or st.get('call') or 'a task'}"
        else:
            what = str(st.get("state") or "idle")
        groups.setdefault((label, what), []).append((number, float(st.get("running_for") or 0.0)))
    parts = []
    for (label, what), members in sorted(groups.items(), key=lambda kv: min(n for n, _ in kv[1])):
        numbers = sorted(n for n, _ in members)
        text = f"{label} {span(numbers)} {what}"
        if what.startswith("in "):
            text += f" for {min(t for _, t in members):.0f} s"
        parts.append(text)
    return "; ".join(parts)


def span(values: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(out)
