"""Reading the cluster a few times a second, as a client of its controller.

Each tick asks the controller one cheap question (its engine list with task
totals and each engine's own status report; for engines too old to report one,
also ``queue_status(verbose=True)``, which tells which tasks they hold) and the hub one (task records finished
since the last tick, by the controller's receive time, which only grows).
Failed tasks' remote tracebacks are fetched from the hub, a few per tick.
Batch jobs are re-read on a slower clock in a thread of their own, because a
batch system's status command may take seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .model import DashboardState, Failure, Sample, task_name

log = logging.getLogger("hpcpar.dashboard")

RECORD_KEYS = ["msg_id", "msg_type", "label", "fname", "engine_id", "status", "started", "completed", "received",
               "ename", "evalue"]
STREAM_LIMIT = 1000  # task records per tick at most (2,000 a second shown in full at 2 ticks a second)
TRACEBACKS_PER_TICK = 5
TRACEBACK_WAIT = 15.0


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return float(value.timestamp())


class Collector:
    """Polls ``client`` every ``interval`` seconds into ``state`` and hands each update to
    ``publish``. ``jobs`` (a callable returning job rows) is called every ``jobs_interval``."""

    def __init__(self, client: Any, state: DashboardState, publish: Callable[[dict[str, Any]], None],
                 interval: float = 0.5, jobs: Callable[[], list[dict[str, Any]]] | None = None,
                 jobs_interval: float = 10.0, timeout: float = 10.0) -> None:
        if interval < 0.2:
            raise ValueError(f"interval={interval} s would poll the controller more than 5 times a "
                             "second; use 0.2 s or more (the default, 0.5 s, is two updates a second)")
        self.client = client
        self.state = state
        self.publish = publish
        self.interval = float(interval)
        self.timeout = timeout
        self.jobs = jobs
        self.jobs_interval = jobs_interval
        self._stop = threading.Event()
        self._keys = list(RECORD_KEYS)
        self._stream = True  # the hub answers task_stream_request (False: a controller from before it)
        self._since: float | None = None  # receive time of the newest record seen
        self._at_since: set[str] = set()  # msg_ids received exactly at _since (asked again by $gte)
        self._tracebacks: dict[str, tuple[Any, dict[str, Any], float]] = {}  # msg_id -> (ar, rec, asked)
        self._jobs_rows: list[dict[str, Any]] | None = None
        self._jobs_new = False
        self._jobs_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- running ---------------------------------------------------------------------

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._run, name="hpcpar-dashboard-collector", daemon=True)]
        if self.jobs is not None:
            self._threads.append(threading.Thread(target=self._run_jobs, name="hpcpar-dashboard-jobs", daemon=True))
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.publish(self.state.apply(self.sample()))
            except Exception:  # noqa: BLE001 - the dashboard keeps running whatever one tick hits
                log.exception("dashboard tick failed")
            self._stop.wait(max(0.05, self.interval - (time.monotonic() - t0)))

    def _run_jobs(self) -> None:
        assert self.jobs is not None
        while not self._stop.is_set():
            try:
                rows = self.jobs()
            except Exception as e:  # noqa: BLE001 - shown on the page, not raised
                rows = [{"system": "?", "id": "-", "role": "-", "state": f"cannot read jobs: {e}"}]
            with self._jobs_lock:
                self._jobs_rows, self._jobs_new = rows, True
            self._stop.wait(self.jobs_interval)

    # -- one tick --------------------------------------------------------------------

    def sample(self) -> Sample:
        now = time.time()
        rc = self.client
        try:
            msg = rc._request("engines_request", {}, timeout=self.timeout)
            # The controller's clock, not this machine's (a laptop's may be off by minutes):
            # task times and the hub's query are in the cluster's time.
            now = float(msg.header.get("date") or now)
            reply = msg.meta
            engines = list(reply.get("engines") or [])
            # Engines that report their status (engine/status.py) have it in this reply
            # already; for older ones, queue_status tells which task each engine holds.
            reported = bool(engines) and all("status" in e for e in engines)
            queue = {"unassigned": 0} if reported else rc.queue_status(verbose=True)
            finished = self._finished(rc, now)
        except Exception as e:  # noqa: BLE001 - a controller that does not answer is shown, not raised
            return Sample(time=now, engines=[], error=f"controller unreachable ({e}); is the cluster still running?")
        unassigned = queue.pop("unassigned", 0)
        sample = Sample(
            time=now, engines=engines, totals=dict(reply.get("tasks") or {}),
            queue={int(k): v for k, v in queue.items() if isinstance(v, dict)},
            unassigned=len(unassigned) if isinstance(unassigned, list) else int(unassigned or 0),
            finished=finished, failures=self._failures(finished),
        )
        with self._jobs_lock:
            if self._jobs_new:
                sample.jobs, self._jobs_new = self._jobs_rows, False
        return sample

    def _query(self, rc: Any, query: dict[str, Any]) -> list[dict[str, Any]]:
        """db_query without turning times into datetimes (they stay epoch seconds)."""
        reply = rc._request("db_query_request", {"query": query, "keys": self._keys}, timeout=self.timeout)
        if reply.msg_type == "error_reply":
            raise ValueError(reply.meta.get("evalue"))
        return reply.meta["records"]

    def _records(self, rc: Any, since: float, until: float) -> list[dict[str, Any]]:
        """Records received in [since, until): the hub's compact task stream (rows, the newest
        STREAM_LIMIT), or db_query from a controller that predates it."""
        if self._stream:
            reply = rc._request("task_stream_request", {"since": since, "until": until, "limit": STREAM_LIMIT},
                                timeout=self.timeout)
            if reply.msg_type != "error_reply":
                keys = reply.meta["keys"]
                return [dict(zip(keys, row)) for row in reply.meta["rows"]]
            self._stream = False
        query = {"received": {"$gte": since, "$lt": until}}
        try:
            return self._query(rc, query)
        except ValueError as e:
            if "fname" not in str(e) or "fname" not in self._keys:
                raise
            self._keys = [k for k in self._keys if k != "fname"]  # a controller from before 'fname'
            return self._query(rc, query)

    def _finished(self, rc: Any, now: float) -> list[dict[str, Any]]:
        # From when the dashboard started: the history of a busy cluster can be large,
        # and fetching it all at once would cost the cluster more than every tick after.
        if self._since is None:
            self._since = now
        # Each record once: the hub answers a query after every reply the controller received
        # before it (one queue), and 'received' is the controller's receive time, so nothing
        # can appear later below the newest time seen. $gte (and the ids seen at exactly that
        # time) covers two replies received in the same microsecond. Two-sided, so SQLite
        # searches its index on 'received' rather than scanning every record.
        records = self._records(rc, self._since, now + 86400.0)
        out = []
        newest = self._since
        for rec in records:
            for key in ("started", "completed", "received"):
                rec[key] = _epoch(rec.get(key))
            received = rec.get("received")
            if received is None or (received == self._since and rec["msg_id"] in self._at_since):
                continue
            newest = max(newest, received)
            out.append(rec)
        if newest != self._since:
            self._at_since = set()
        self._at_since.update(r["msg_id"] for r in out if r["received"] == newest)
        self._since = newest
        return out

    def _failures(self, finished: list[dict[str, Any]]) -> list[Failure]:
        """Failures whose traceback has arrived (or that waited long enough without one)."""
        rc = self.client
        for rec in finished:
            if rec.get("status") not in (None, "ok") and len(self._tracebacks) < 200:
                self._tracebacks[rec["msg_id"]] = (None, rec, 0.0)
        ready: list[Failure] = []
        asked = 0
        now = time.monotonic()
        for msg_id, (ar, rec, when) in list(self._tracebacks.items()):
            if ar is None:
                if asked >= TRACEBACKS_PER_TICK:
                    continue
                asked += 1
                try:
                    ar = rc.get_result(msg_id, block=False)
                except Exception as e:  # noqa: BLE001
                    ready.append(self._failure(rec, f"(traceback not available: {e})"))
                    del self._tracebacks[msg_id]
                    continue
                self._tracebacks[msg_id] = (ar, rec, now)
                when = now
            if ar.ready():
                ready.append(self._failure(rec, *_error_of(ar)))
            elif now - when > TRACEBACK_WAIT:
                ready.append(self._failure(rec, "(the hub did not send the traceback)"))
            else:
                continue
            del self._tracebacks[msg_id]
        if ready:
            try:
                rc.purge_local_results([f.msg_id for f in ready])
            except Exception:  # noqa: BLE001 - only memory of this client
                pass
        return ready

    def _failure(self, rec: dict[str, Any], traceback: str, ename: str | None = None,
                 evalue: str | None = None) -> Failure:
        return Failure(msg_id=rec["msg_id"], engine=rec.get("engine_id"),
                       time=rec.get("completed") or rec.get("received") or time.time(),
                       ename=str(ename or rec.get("ename") or "Error"), evalue=str(evalue or rec.get("evalue") or ""),
                       traceback=traceback, name=task_name(rec))


def _error_of(ar: Any) -> tuple[str, str | None, str | None]:
    """(traceback, ename, evalue) of a failed task's AsyncResult."""
    try:
        ar.get(timeout=0)
    except BaseException as e:  # noqa: BLE001 - the failure is what we came for
        errors = getattr(e, "errors", None)  # a CompositeError (of one): its error
        if errors:
            e = errors[0]
        tb = getattr(e, "traceback", None)
        return (str(tb) if tb else f"{type(e).__name__}: {e}"), getattr(e, "ename", None), getattr(e, "evalue", None)
    return "", None, None
