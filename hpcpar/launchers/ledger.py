"""The job ledger: every batch job id, on disk in the profile's run/ directory.

Ids are written the moment a submit command returns, so ``hpcpar stop`` in any other
process, after any crash of the starting one, can cancel every job of the cluster.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..paths import ProfileDir


@dataclass
class JobRecord:
    """One submitted job; ``cancel`` is the argv prefix that cancels it."""

    system: str
    role: str
    job_id: str
    cancel: list[str] = field(default_factory=list)
    script: str = ""
    submitted: float = field(default_factory=time.time)


def ledger_path(profile_dir: ProfileDir, cluster_id: str = "") -> Path:
    suffix = f"-{cluster_id}" if cluster_id else ""
    return profile_dir.run / f"jobs{suffix}.json"


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return data if isinstance(data, list) else []


def _write(path: Path, entries: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entries, indent=1))
    os.replace(tmp, path)


def record_job(profile_dir: ProfileDir, cluster_id: str, record: JobRecord) -> None:
    path = ledger_path(profile_dir, cluster_id)
    with _locked(path):
        entries = _read(path)
        entries.append(asdict(record))
        _write(path, entries)


def read_jobs(profile_dir: ProfileDir, cluster_id: str = "") -> list[JobRecord]:
    known = set(JobRecord.__dataclass_fields__)
    return [
        JobRecord(**{k: v for k, v in e.items() if k in known})
        for e in _read(ledger_path(profile_dir, cluster_id))
        if isinstance(e, dict) and "job_id" in e
    ]


def forget_jobs(profile_dir: ProfileDir, cluster_id: str, job_ids: set[str]) -> None:
    """Drop cancelled or finished jobs; remove the file when none remain."""
    path = ledger_path(profile_dir, cluster_id)
    with _locked(path):
        entries = [e for e in _read(path) if str(e.get("job_id")) not in job_ids]
        if entries:
            _write(path, entries)
        else:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".lock").unlink(missing_ok=True)
