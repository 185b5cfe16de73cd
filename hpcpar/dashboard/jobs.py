"""The batch jobs (and local process sets) of a cluster, for the dashboard's jobs panel.

Read from the cluster's state file in its profile directory, where the launchers
record what they started, asking the batch system for each job's state. Over SSH
the same reading runs on the login node: ``python -m hpcpar.dashboard.jobs
--profile-dir DIR`` prints the rows as JSON (this module imports no web code).
Walltime left is counted from when this dashboard first saw a job running, so for
a job already running when the dashboard started it is an upper bound ("<=").
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any


def _walltime(launcher: Any) -> int | None:
    text = (getattr(launcher, "options", None) or {}).get("walltime")
    if not text:
        return None
    try:
        from ..config.units import parse_walltime

        return parse_walltime(str(text))
    except (ValueError, ImportError):
        return None


def _rows_of(role: str, launcher: Any) -> list[dict[str, Any]]:
    base = {"system": launcher.name, "role": role, "n": getattr(launcher, "n", None),
            "walltime": _walltime(launcher)}
    job_ids = [str(j) for j in getattr(launcher, "job_ids", []) or []]
    if job_ids and hasattr(launcher, "poll"):
        try:
            states = launcher.poll(force=True)
        except Exception as e:  # noqa: BLE001 - a batch system that cannot be asked
            return [{**base, "id": j, "state": f"unknown ({e})"} for j in job_ids]
        return [{**base, "id": j, "state": states[j].state if j in states else "pending",
                 "native": states[j].native if j in states else ""} for j in job_ids]
    try:
        state = launcher.status()
    except Exception as e:  # noqa: BLE001
        state = f"unknown ({e})"
    pids = [int(p.pid) for p in getattr(launcher, "processes", [])]
    row = {**base, "id": ", ".join(job_ids or map(str, pids)) or "-", "state": state}
    if launcher.name == "local":
        row["pids"] = pids  # local engines are these processes: the page counts them by pid
    return [row]


def read_jobs(profile_dir: str | Path, cluster_id: str = "") -> list[dict[str, Any]]:
    """One row per batch job (or per local process set): system, id, role, n, state, walltime."""
    from ..cluster import Cluster
    from ..paths import ProfileDir

    path = ProfileDir(Path(profile_dir)).state_file(cluster_id)
    if not path.exists():
        return []
    cluster = Cluster.from_file(path)
    rows: list[dict[str, Any]] = []
    if cluster.controller is not None:
        rows += _rows_of("controller", cluster.controller)
    for launcher in cluster.engine_sets:
        rows += _rows_of("engines", launcher)
    for launcher in getattr(cluster, "forwarder_sets", []) or []:
        rows += _rows_of("forwarder", launcher)
    return rows


class WalltimeClock:
    """Adds ``walltime_left`` (seconds) to job rows, counting from when a job was first
    seen running; ``walltime_bound`` says the job ran before the dashboard saw it."""

    def __init__(self) -> None:
        self.started: dict[str, tuple[float, bool]] = {}
        self.first_read = True

    def __call__(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        now = time.time()
        for row in rows:
            key = f"{row.get('system')}:{row.get('id')}"
            if row.get("state") == "running":
                start, bound = self.started.setdefault(key, (now, self.first_read))
                if row.get("walltime"):
                    row["walltime_left"] = max(0, int(row["walltime"] - (now - start)))
                    row["walltime_bound"] = bound
        self.first_read = False
        return rows


class LocalJobs:
    """Jobs of a cluster whose profile directory is on this machine."""

    def __init__(self, profile_dir: str | Path, cluster_id: str = "") -> None:
        self.profile_dir, self.cluster_id = str(profile_dir), cluster_id
        self.clock = WalltimeClock()

    def __call__(self) -> list[dict[str, Any]]:
        return self.clock(read_jobs(self.profile_dir, self.cluster_id))


class RemoteJobs:
    """Jobs of a cluster on the other side of an SSH session (the client's tunnel): runs
    this module there with ``python`` (a command, e.g. ``python3`` or a venv's python)."""

    def __init__(self, session: Any, python: str, profile_expr: str, cluster_id: str = "") -> None:
        self.session = session
        self.command = f"{python} -m hpcpar.dashboard.jobs --profile-dir {profile_expr}"
        if cluster_id:
            self.command += f" --cluster-id {shlex.quote(cluster_id)}"
        self.clock = WalltimeClock()

    def __call__(self) -> list[dict[str, Any]]:
        r = self.session.run(self.command, timeout=60)
        if r.rc != 0:
            why = (r.stderr.strip().splitlines() or [f"exit status {r.rc}"])[-1]
            raise RuntimeError(f"'{self.command}' failed on {self.session.description}: {why}")
        return self.clock(json.loads(r.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcpar.dashboard.jobs",
                                description="print a cluster's jobs as JSON (used by the dashboard over SSH)")
    p.add_argument("--profile-dir", required=True)
    p.add_argument("--cluster-id", default="")
    args = p.parse_args(argv)
    print(json.dumps(read_jobs(Path(args.profile_dir).expanduser(), args.cluster_id)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
