"""The hub's record of tasks: who submitted what, where it ran, how it ended.

Records are kept off the reply path: the controller forwards a reply first
and records it after. Finished records are bounded (oldest dropped first) so
a long task farm does not grow the controller's memory.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class TaskRecord:
    msg_id: str
    session: str
    msg_type: str
    submitted: float | None
    engine_id: int | None = None
    started: float | None = None
    completed: float | None = None
    status: str = "pending"  # pending, queued, running, ok, error, aborted
    label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Hub:
    def __init__(self, finished_limit: int = 10_000) -> None:
        self.pending: dict[str, TaskRecord] = {}
        self.finished: OrderedDict[str, TaskRecord] = OrderedDict()
        self.finished_limit = finished_limit
        self.total_submitted = 0
        self.total_finished = 0

    def submitted(self, header: dict[str, Any], msg_id: str, engine_id: int | None) -> None:
        self.total_submitted += 1
        self.pending[msg_id] = TaskRecord(
            msg_id=msg_id,
            session=header.get("session", ""),
            msg_type=header.get("msg_type", ""),
            submitted=header.get("date"),
            engine_id=engine_id,
            status="queued" if engine_id is None else "pending",
            label=header.get("label"),
        )

    def assigned(self, msg_id: str, engine_id: int) -> None:
        rec = self.pending.get(msg_id)
        if rec is not None:
            rec.engine_id = engine_id
            rec.status = "pending"

    def finished_task(self, msg_id: str, header: dict[str, Any]) -> None:
        rec = self.pending.pop(msg_id, None)
        if rec is None:
            return
        self.total_finished += 1
        rec.started = header.get("started")
        rec.completed = header.get("completed")
        rec.status = header.get("status", "ok")
        if header.get("engine_id") is not None:
            rec.engine_id = header["engine_id"]
        self.finished[msg_id] = rec
        while len(self.finished) > self.finished_limit:
            self.finished.popitem(last=False)

    def get(self, msg_id: str) -> TaskRecord | None:
        return self.pending.get(msg_id) or self.finished.get(msg_id)

    def totals(self) -> dict[str, int]:
        return {
            "submitted": self.total_submitted,
            "finished": self.total_finished,
            "pending": len(self.pending),
        }
