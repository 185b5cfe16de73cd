"""What the page shows, as plain data: engines, task bars, queue series, failures, jobs.

``DashboardState.apply`` takes one :class:`Sample` (what the collector read from
the cluster in one tick) and returns the change to push to browsers; ``snapshot``
is everything a newly opened page needs. Kept free of web and client code so
that it can be fed synthetic samples (tests, 1,000-engine renders).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

ENGINE_STATES = ("idle", "busy", "draining", "dead")
DEFAULT_WINDOW = 300.0  # seconds of task stream and queue history kept
MAX_TASKS = 50_000  # task bars kept at most, whatever the window
MAX_FAILURES = 25
DEAD_KEEP = 600.0  # seconds a dead engine stays on the page


@dataclass
class EngineView:
    """One engine's row; ``since`` is when its running task started (epoch seconds), so
    the page computes "running for" itself and a busy engine is not resent every tick."""

    id: int
    host: str | None = None
    pid: int | None = None
    mpi_rank: int | None = None
    state: str = "idle"
    task: str | None = None
    since: float | None = None
    call: str | None = None
    callee: str | None = None
    rss: int | None = None
    cpu: float | None = None
    done: int = 0
    queued: int = 0
    dead_at: float | None = None
    job_id: str | None = None  # the batch job it runs in, when it reports one


@dataclass
class Failure:
    msg_id: str
    engine: int | None
    time: float
    ename: str
    evalue: str
    traceback: str = ""
    name: str = ""


@dataclass
class Sample:
    """One read of the cluster. ``engines`` as the controller's engines_request lists
    them; ``queue`` is ``queue_status(verbose=True)`` by engine id (with the pool's
    ``status`` dict when engines report it); ``finished`` are new task records
    (times as epoch seconds); ``jobs`` is None when not re-read this tick."""

    time: float
    engines: list[dict[str, Any]]
    totals: dict[str, int] = field(default_factory=dict)
    queue: dict[int, dict[str, Any]] = field(default_factory=dict)
    unassigned: int = 0
    finished: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    jobs: list[dict[str, Any]] | None = None
    error: str | None = None


def task_name(rec: dict[str, Any], calls: dict[str, str] | None = None) -> str:
    """What a task bar is coloured by: its function when known, else label or kind."""
    for key in ("fname", "function"):
        if rec.get(key):
            return str(rec[key])
    if calls and rec.get("msg_id") in calls:
        return calls[rec["msg_id"]]
    if rec.get("label"):
        return str(rec["label"])
    kind = str(rec.get("msg_type") or "task")
    return kind.removesuffix("_request")


def call_name(call: str | None) -> str | None:
    """The function part of a status ``call`` ("file:line name" -> "name")."""
    if not call:
        return None
    return call.rsplit(" ", 1)[-1] or None


def _num(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    ts = getattr(value, "timestamp", None)  # a datetime from the public db_query
    return float(ts()) if ts is not None else None


class DashboardState:
    """The dashboard's memory of the cluster; thread-safe (collector writes, server reads)."""

    def __init__(self, window: float = DEFAULT_WINDOW, title: str = "") -> None:
        self.window = float(window)
        self.title = title
        self.lock = threading.Lock()
        self.seq = 0
        self.now = 0.0
        self.engines: dict[int, EngineView] = {}
        self.tasks: collections.deque[dict[str, Any]] = collections.deque()
        self.series: collections.deque[dict[str, Any]] = collections.deque()
        self.failures: collections.deque[Failure] = collections.deque(maxlen=MAX_FAILURES)
        self.jobs: list[dict[str, Any]] = []
        self.totals: dict[str, int] = {}
        self.error: str | None = None
        self.has_status = False  # do engines report the pool's status dict?
        self._sent: dict[int, dict[str, Any]] = {}  # engine id -> the row browsers have
        self._first_seen: dict[tuple[int, str], float] = {}  # (engine, msg_id) -> time seen running
        self._calls: dict[str, str] = {}  # msg_id -> function name seen while it ran
        self._last_finished: tuple[float, int] | None = None
        self._rates: collections.deque[tuple[float, int]] = collections.deque()

    # -- engines -------------------------------------------------------------------------

    def _engine(self, info: dict[str, Any], queue: dict[str, Any], now: float) -> EngineView:
        eid = int(info["id"])
        status = queue.get("status") or info.get("status")
        status = status if isinstance(status, dict) else None
        held = [m for key in ("queue", "tasks") if isinstance(queue.get(key), list) for m in queue[key]]
        n_held = len(held) or int(info.get("queued") or 0) + int(info.get("running_lb") or 0)
        view = EngineView(
            id=eid, host=info.get("hostname"), pid=info.get("pid"), mpi_rank=info.get("mpi_rank"),
            done=int(info.get("completed") or queue.get("completed") or 0), queued=max(0, n_held - 1),
        )
        if status is not None:
            self.has_status = True
            view.state = str(status.get("state") or ("busy" if n_held else "idle"))
            view.task = status.get("task")
            running_for = _num(status.get("running_for"))
            if view.task and running_for is not None:
                # Fixed once per task, so a busy engine's row is not resent every tick.
                view.since = self._first_seen.setdefault((eid, view.task), round(now - running_for, 1))
            view.call = status.get("call")
            view.callee = status.get("callee")
            view.job_id = status.get("job_id")
            view.rss = status.get("rss")
            view.cpu = status.get("cpu")
            view.host = status.get("host") or view.host
            view.pid = status.get("pid") or view.pid
            if status.get("mpi_rank") is not None:
                view.mpi_rank = status.get("mpi_rank")
            name = call_name(view.call)
            if view.task and name:
                self._calls.setdefault(view.task, name)
        else:
            view.state = "busy" if n_held else "idle"
            view.task = held[0] if held else None
        if view.task and view.since is None:
            # Without the engine's own report: from when this dashboard first saw it held.
            view.since = self._first_seen.setdefault((eid, view.task), now)
        return view

    def _update_engines(self, sample: Sample) -> tuple[list[dict[str, Any]], list[int]]:
        now = sample.time
        seen: set[int] = set()
        for info in sample.engines:
            view = self._engine(info, sample.queue.get(int(info["id"]), {}), now)
            self.engines[view.id] = view
            seen.add(view.id)
        removed = []
        for eid, view in list(self.engines.items()):
            if eid in seen:
                continue
            if view.state != "dead":
                view.state, view.task, view.since, view.dead_at = "dead", None, None, now
                view.cpu = view.rss = view.call = view.callee = None
            elif view.dead_at is not None and now - view.dead_at > DEAD_KEEP:
                del self.engines[eid]
                self._sent.pop(eid, None)
                removed.append(eid)
        running = {(e.id, e.task) for e in self.engines.values() if e.task}
        for key in [k for k in self._first_seen if k not in running]:
            del self._first_seen[key]
        changed = []
        for eid in sorted(self.engines):
            row = asdict(self.engines[eid])
            if self._sent.get(eid) != row:
                self._sent[eid] = row
                changed.append(row)
        return changed, removed

    # -- tasks, series, failures ---------------------------------------------------------

    def _bars(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        bars = []
        for rec in records:
            completed = _num(rec.get("completed")) or _num(rec.get("received"))
            if completed is None:
                continue
            started = _num(rec.get("started")) or completed
            ok = rec.get("status") in (None, "ok")
            bars.append({"id": rec.get("msg_id"), "e": rec.get("engine_id"), "s": round(started, 3),
                         "c": round(completed, 3), "f": task_name(rec, self._calls), "ok": ok})
            self._calls.pop(rec.get("msg_id"), None)
        return bars

    def _point(self, sample: Sample, busy: int) -> dict[str, Any]:
        finished = int(sample.totals.get("finished") or 0)
        now = sample.time
        self._rates.append((now, finished))
        while len(self._rates) > 2 and now - self._rates[0][0] > 3.0:
            self._rates.popleft()  # throughput over the last ~3 s
        t0, f0 = self._rates[0]
        rate = (finished - f0) / (now - t0) if now > t0 else 0.0
        pending = int(sample.totals.get("pending") or 0)
        return {"t": round(now, 2), "queued": max(0, pending - busy), "running": busy, "rate": round(max(rate, 0.0), 2)}

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        while self.tasks and (self.tasks[0]["c"] < horizon or len(self.tasks) > MAX_TASKS):
            self.tasks.popleft()
        while self.series and self.series[0]["t"] < horizon:
            self.series.popleft()
        if len(self._calls) > 10_000:
            self._calls.clear()

    # -- the two things the server asks for ----------------------------------------------

    def apply(self, sample: Sample) -> dict[str, Any]:
        """Take one sample; return the update browsers need (``seq`` orders them)."""
        with self.lock:
            self.seq += 1
            self.now = sample.time
            update: dict[str, Any] = {"type": "update", "seq": self.seq, "now": round(sample.time, 3)}
            if sample.error is not None or self.error is not None:
                update["error"] = sample.error
            self.error = sample.error
            if sample.error is not None:
                return update  # the controller did not answer: keep showing what we had
            changed, removed = self._update_engines(sample)
            if changed:
                update["engines"] = changed
            if removed:
                update["removed"] = removed
            bars = self._bars(sample.finished)
            self.tasks.extend(bars)
            if bars:
                update["tasks"] = bars
            busy = sum(1 for e in self.engines.values() if e.state in ("busy", "draining") and e.task)
            point = self._point(sample, busy)
            self.series.append(point)
            update["point"] = point
            if sample.failures:
                self.failures.extend(sample.failures)
                update["failures"] = [asdict(f) for f in sample.failures]
            if sample.jobs is not None and sample.jobs != self.jobs:
                self.jobs = sample.jobs
                update["jobs"] = sample.jobs
            if sample.totals != self.totals:
                self.totals = dict(sample.totals)
                update["totals"] = self.totals
            update["status"] = self.has_status
            self._trim(sample.time)
            return update

    def snapshot(self) -> dict[str, Any]:
        """Everything a page needs to start from (the updates after it have higher ``seq``)."""
        with self.lock:
            return {
                "type": "snapshot", "seq": self.seq, "now": round(self.now, 3), "title": self.title,
                "window": self.window, "engines": [asdict(self.engines[e]) for e in sorted(self.engines)],
                "tasks": list(self.tasks), "series": list(self.series),
                "failures": [asdict(f) for f in self.failures], "jobs": self.jobs, "totals": self.totals,
                "error": self.error, "status": self.has_status,
            }
