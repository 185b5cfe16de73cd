"""What a pool is and has: its settings, its jobs ("blocks"), its decisions, its failures.

Kept in ``<profile>/run/pool[-<cluster id>].json`` so any shell can read it (``hpcpar
status``) or change it (``hpcpar scale``). Every read-modify-write holds an exclusive lock
on ``pool[-ID].lock`` (:func:`locked`), so the manager's steps and a ``scale`` from another
shell never overwrite each other.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..paths import ProfileDir

KEEP_DECISIONS = 50


@dataclass
class Block:
    """One batch job of the pool, carrying ``engines`` engines."""

    job_id: str
    system: str
    engines: int
    submitted: float
    state: str = "pending"
    started: float | None = None  # epoch seconds it started (the scheduler's word, else first seen running)
    start_from: str = ""  # "scheduler" or "first seen": where ``started`` came from
    ends: float | None = None  # started + walltime, when the walltime is known
    registered: bool = False  # an engine of it registered at some point
    removing: str = ""  # why the pool cancels it ("" = it does not)
    finished: float | None = None  # when it left the queue

    @property
    def alive(self) -> bool:
        return self.finished is None


@dataclass
class PoolState:
    system: str
    engines_per_job: int = 1
    minimum: int = 0
    maximum: int = 0  # most engines in the queue at once (0 = no cap)
    surge: int = 0  # engines above maximum allowed while replacing jobs near their walltime
    target: int = 0
    adaptive: bool = False
    interval: float = 5.0
    idle_timeout: float = 60.0
    wait_count: int = 3
    lead: float = 120.0
    backoff: float = 10.0
    backoff_max: float = 300.0
    max_failures: int = 3
    walltime: float = 0.0  # seconds each job asks for; 0 = unknown (no replacement)
    blocks: list[Block] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    failures: int = 0  # failed jobs in a row
    next_submit_at: float = 0.0  # back-off: no submission before this epoch time
    stopped: str = ""  # why the pool stopped submitting ("" = it did not)
    shrink_votes: int = 0  # consecutive looks that called for shrinking
    manager_pid: int | None = None
    manager_started: str = ""  # the manager process's start time (pid reuse guard)
    next_change: str = ""  # what the pool plans next, for `hpcpar status`
    next_mpi_id: int = 0  # mode = "mpi": the engine id the next MPI set's rank 0 asks for

    def alive_blocks(self) -> list[Block]:
        return [b for b in self.blocks if b.alive]

    def decide(self, action: str, reason: str, now: float | None = None) -> None:
        """Log a decision with its reason (shown by `hpcpar status`, kept in the state)."""
        self.decisions.append({"time": time.time() if now is None else now, "action": action, "reason": reason})
        del self.decisions[:-KEEP_DECISIONS]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolState:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        block_fields = {f.name for f in fields(Block)}
        values["blocks"] = [Block(**{k: v for k, v in b.items() if k in block_fields}) for b in data.get("blocks", [])]
        return cls(**values)


def pool_file(pd: ProfileDir, cluster_id: str = "") -> Path:
    return pd.run / (f"pool-{cluster_id}.json" if cluster_id else "pool.json")


def read_pool(pd: ProfileDir, cluster_id: str = "") -> PoolState | None:
    path = pool_file(pd, cluster_id)
    try:
        return PoolState.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        raise RuntimeError(f"cannot read the pool state {path} ({e}); remove it if no pool runs") from None


def stopped_reason(pd: ProfileDir, cluster_id: str = "") -> str | None:
    """Why the pool stopped submitting ("" when it did not; None when no pool state is
    readable here): lets the client's and the Cluster's waits fail at once instead of
    timing out."""
    try:
        state = read_pool(pd, cluster_id)
    except RuntimeError:
        return None
    return state.stopped if state is not None else None


def write_pool(pd: ProfileDir, cluster_id: str, state: PoolState) -> None:
    path = pool_file(pd, cluster_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(state.to_json())
    os.replace(tmp, path)


def remove_pool(pd: ProfileDir, cluster_id: str = "") -> None:
    pool_file(pd, cluster_id).unlink(missing_ok=True)
    pool_file(pd, cluster_id).with_suffix(".lock").unlink(missing_ok=True)


@contextmanager
def locked(pd: ProfileDir, cluster_id: str = "") -> Iterator[None]:
    """Exclusive access to the pool state for one read-modify-write."""
    lock = pool_file(pd, cluster_id).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
