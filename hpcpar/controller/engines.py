"""The controller's registry of engines and the work each one holds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EngineRecord:
    id: int
    ident: bytes  # routing identity of the engine's control socket (heartbeats, signals, abort)
    uuid: str
    info: dict[str, Any]
    registered: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.monotonic)
    outstanding: dict[str, bool] = field(default_factory=dict)  # msg_id -> load-balanced?
    completed: int = 0
    lb_in_flight: int = 0
    last_assigned: float = 0.0
    last_ping_sent: float = 0.0
    work_ident: bytes | None = None  # routing identity of the socket requests and replies use
    ready: bool = False  # registered and its work socket introduced: it may get requests
    status: dict[str, Any] | None = None  # the engine's last engine_status (engine/status.py)
    status_at: float = 0.0  # monotonic time it arrived
    retiring: str | None = None  # why it takes no new work (walltime drain), or None
    proc: tuple[int, int] | None = None  # (pid, start time) of its process, if on the controller's host

    def current_status(self, now: float) -> dict[str, Any] | None:
        """The last reported status, its running time brought up to ``now``."""
        if self.status is None:
            return None
        st = dict(self.status)
        if st.get("task") is not None:
            st["running_for"] = round(float(st.get("running_for") or 0.0) + now - self.status_at, 1)
        st["age"] = round(now - self.status_at, 1)
        return st

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uuid": self.uuid,
            "registered": self.registered,
            **{k: v for k, v in self.info.items() if k in ("hostname", "pid", "mpi_rank", "mpi_size", "mpi_world",
                                                           "host_key", "job_id", "job_end")},
        }


class EngineRegistry:
    """Engine ids are never reused within a controller's lifetime, except that
    an engine asking for a specific free id (its MPI rank, or its old id after
    a controller restart) gets it."""

    def __init__(self) -> None:
        self.by_id: dict[int, EngineRecord] = {}
        self.by_ident: dict[bytes, EngineRecord] = {}
        self.by_work: dict[bytes, EngineRecord] = {}
        self.next_id = 0
        self.retired: set[int] = set()
        self.expected: dict[str, int] = {}  # uuid -> id, from before a controller restart

    def __len__(self) -> int:
        return len(self.by_id)

    def ids(self) -> list[int]:
        return sorted(e.id for e in self.by_id.values() if e.ready)

    def register(self, ident: bytes, uuid: str, requested: int | None, info: dict[str, Any]) -> EngineRecord:
        existing = self.by_ident.get(ident)
        if existing is not None:
            existing.last_seen = time.monotonic()
            return existing
        if uuid in self.expected and self.expected[uuid] not in self.by_id:
            requested = self.expected.pop(uuid)  # an engine coming back after a restart
        if isinstance(requested, int) and requested >= 0 and requested not in self.by_id:
            eid = requested
        else:
            eid = self.next_id
            while eid in self.by_id or eid in self.retired:
                eid += 1
        self.next_id = max(self.next_id, eid + 1)
        rec = EngineRecord(id=eid, ident=ident, uuid=uuid, info=info)
        self.by_id[eid] = rec
        self.by_ident[ident] = rec
        return rec

    def expect(self, engines: dict[str, int], next_id: int) -> None:
        """After a restart: engines that re-register with these uuids get their old ids."""
        self.expected = dict(engines)
        self.next_id = max(self.next_id, next_id)
        self.retired.update(engines.values())

    def lookup(self, ident: bytes) -> EngineRecord | None:
        return self.by_ident.get(ident) or self.by_work.get(ident)

    def set_work(self, rec: EngineRecord, work_ident: bytes) -> None:
        if rec.work_ident is not None:
            self.by_work.pop(rec.work_ident, None)
        rec.work_ident = work_ident
        self.by_work[work_ident] = rec

    def ready(self) -> list[EngineRecord]:
        return [e for e in self.by_id.values() if e.ready]

    def remove(self, rec: EngineRecord) -> None:
        self.by_id.pop(rec.id, None)
        self.by_ident.pop(rec.ident, None)
        if rec.work_ident is not None:
            self.by_work.pop(rec.work_ident, None)
        self.retired.add(rec.id)
