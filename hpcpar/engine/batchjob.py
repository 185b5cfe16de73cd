"""Which batch job, and which task of a job array, this process runs in.

One answer for everything that needs it: the engine reports :attr:`BatchJob.task_id` when
it registers (a restored controller asks the batch system about exactly that id, so a
finished task of a live array counts as gone, controller/jobcheck.py), walltime.py dates
the job's end with it, and the status sampler reports :attr:`BatchJob.job_id` (the id the
submission printed and the job ledger holds: the dashboard counts a job's engines by it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchJob:
    system: str  # slurm, sge, pbs, lsf, winhpc
    job_id: str  # the submitted job's id (an array's own id for its tasks), without a PBS server name
    task: str | None = None  # the array task's index, None outside an array
    task_id_format: str = "{job}"  # how the scheduler's status command names one task

    @property
    def task_id(self) -> str:
        """The id to ask the scheduler about: ``17_3`` (SLURM), ``17.3`` (SGE), ``17[3]``
        (PBS, LSF) for an array task; the job id otherwise. Its leading number is the
        ledger's id (pool/policy.py job_key compares on it)."""
        return self.job_id if self.task is None else self.task_id_format.format(job=self.job_id, task=self.task)


def _set(env: Mapping[str, str], name: str) -> str | None:
    value = (env.get(name) or "").strip()
    return value if value and value != "undefined" else None


def batch_job(environ: Mapping[str, str] | None = None) -> BatchJob | None:
    """The batch job of this environment, None outside one. SLURM is looked at first: the
    PBS and LSF wrappers of a SLURM site run their jobs as SLURM jobs."""
    env = os.environ if environ is None else environ
    if _set(env, "SLURM_ARRAY_JOB_ID") and _set(env, "SLURM_ARRAY_TASK_ID"):
        return BatchJob("slurm", env["SLURM_ARRAY_JOB_ID"].strip(), env["SLURM_ARRAY_TASK_ID"].strip(), "{job}_{task}")
    if job := _set(env, "SLURM_JOB_ID"):
        return BatchJob("slurm", job)
    if (job := _set(env, "JOB_ID")) and "SGE_TASK_ID" in env:  # Grid Engine: "undefined" outside an array
        return BatchJob("sge", job, _set(env, "SGE_TASK_ID"), "{job}.{task}")
    if job := _set(env, "PBS_ARRAY_ID") or _set(env, "PBS_JOBID"):
        task = _set(env, "PBS_ARRAY_INDEX") if _set(env, "PBS_ARRAY_ID") else None
        job = job.split(".")[0]  # 123.server -> 123, 123[].server -> 123[]
        return BatchJob("pbs", job, task, "{job}" if task is None else job.replace("[]", "[{task}]"))
    if job := _set(env, "LSB_JOBID"):
        index = _set(env, "LSB_JOBINDEX")
        return BatchJob("lsf", job, index if index not in (None, "0") else None, "{job}[{task}]")
    if job := _set(env, "JOB_ID"):  # Grid Engine without SGE_TASK_ID in the environment
        return BatchJob("sge", job)
    if job := _set(env, "CCP_JOBID"):
        return BatchJob("winhpc", job)
    return None
