"""An engine in a batch job knows when its job ends, and retires before that.

The job script exports ``HPCPAR_JOB_START`` (``date +%s`` as the job began),
``HPCPAR_WALLTIME`` (the walltime it asked for, in seconds) and ``HPCPAR_DRAIN``
(``[batch] drain``). ``drain`` seconds before the end the engine tells the controller it is
draining: the controller sends it no new load-balanced work and refuses direct requests
with an error naming the retirement; once the engine holds no work the controller tells it
to leave. So nothing it was given is lost to the walltime kill.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

# Batch systems' own job-id variables, in the order they are looked at.
JOB_ID_VARS = ("SLURM_JOB_ID", "JOB_ID", "PBS_JOBID", "LSB_JOBID", "CCP_JOBID")


@dataclass(frozen=True)
class JobClock:
    job_id: str | None
    end: float | None  # epoch seconds the scheduler ends the job at (None: unknown)
    drain: float  # seconds before ``end`` to retire

    @property
    def drain_at(self) -> float | None:
        if self.end is None or self.drain <= 0:
            return None
        return self.end - self.drain

    def seconds_to_drain(self, now: float | None = None) -> float | None:
        at = self.drain_at
        return None if at is None else at - (time.time() if now is None else now)


def job_clock(environ: Mapping[str, str] | None = None) -> JobClock:
    env = os.environ if environ is None else environ
    job_id = next((env[v] for v in JOB_ID_VARS if env.get(v) and env[v] != "undefined"), None)
    if job_id is not None:
        job_id = job_id.split(".")[0]  # PBS: 123.server -> 123, like the launchers compare ids
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        # A SLURM array task has an id of its own; 17_3 (as squeue names it) leads with the
        # array's id, the one the job ledger holds (a restored controller asks about it).
        job_id = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    try:
        start = float(env["HPCPAR_JOB_START"])
        walltime = float(env["HPCPAR_WALLTIME"])
        end = start + walltime if walltime > 0 else None
    except (KeyError, ValueError):
        end = None
    try:
        drain = float(env.get("HPCPAR_DRAIN") or 0.0)
    except ValueError:
        drain = 0.0
    return JobClock(job_id, end, drain)


def retirement_reason(clock: JobClock) -> str:
    end = time.strftime("%H:%M:%S", time.localtime(clock.end)) if clock.end else "?"
    job = f"batch job {clock.job_id}" if clock.job_id else "its batch job"
    return f"retiring: {job} reaches its walltime at {end}"
