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

from .batchjob import batch_job


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
    job = batch_job(env)
    job_id = job.task_id if job is not None else None  # an array task as the scheduler names it: 17_3
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
