"""HTCondor: a submit description (``queue N``) plus the job script it runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .base import CANCELLED, DONE, HELD, PENDING, RUNNING, UNKNOWN
from .batch import BatchLauncher, JobState, PollError, RenderedJob, aggregate
from .formats import mebibytes
from .shell import CommandResult
from .templating import render_template, template_search_path

# JobStatus codes.
STATES = {
    "1": PENDING,  # idle
    "2": RUNNING,
    "3": CANCELLED,  # removed
    "4": DONE,  # completed
    "5": HELD,
    "6": RUNNING,  # transferring output
    "7": HELD,  # suspended
}


def parse_condor_id(output: str) -> str:
    """Cluster id from ``N job(s) submitted to cluster C.`` or ``-terse``'s ``C.0 - C.3``."""
    found = re.findall(r"submitted to cluster (\d+)", output)
    if found:
        return found[-1]
    for line in reversed(output.strip().splitlines()):
        m = re.match(r"^(\d+)\.\d+(?:\s*-\s*\d+\.\d+)?$", line.strip())
        if m:
            return m.group(1)
    raise ValueError("no 'submitted to cluster' line")


class HTCondorLauncher(BatchLauncher):
    name = "htcondor"
    prefix = ""
    array_index_var = "HPCPAR_TASK_ID"
    output_pattern = "$(Cluster)"
    array_output_pattern = "$(Cluster).$(Process)"
    supports_mpi = False  # the parallel universe is too site-specific to drive blind
    gone_patterns = (r"Couldn't find", r"not found", r"nonexistent")
    ok_patterns = (r"marked for removal", r"Couldn't find/remove all jobs")

    def system_context(self, ctx: dict[str, Any]) -> dict[str, Any]:
        return {
            "request_memory": mebibytes(ctx["memory_bytes"] * ctx["engines_per_job"]) if ctx["memory_bytes"] else 0,
            "request_disk": self.options["request_disk"],
            "universe": self.options["universe"],
            "requirements": self.options["requirements"],
            "script_name": self.file_stem() + ".sh",
            "queue_count": ctx["array_size"] or 1,
        }

    def output_paths(self, log_path: str, array: bool) -> tuple[str, str]:
        output, error = super().output_paths(log_path, array)
        return output, error or output.replace(".out", ".err")

    def render(self, command: list[str], env: dict[str, str], log_path: str) -> RenderedJob:
        self.check()
        ctx = self.context(command, env, log_path)
        search = template_search_path(self.profile_dir)
        script = render_template(f"htcondor/{self.role}.sh.j2", ctx, search)
        description = render_template(f"htcondor/{self.role}.sub.j2", ctx, search)
        sub = self.file_stem() + ".sub"
        return RenderedJob(self.name, self.role, {ctx["script_name"]: script, sub: description}, sub, ctx["copies"])

    def submit_argv(self, path: Path) -> list[str]:
        return [*self.options["submit_command"], str(path)]

    def parse_job_id(self, output: str) -> str:
        return parse_condor_id(output)

    def status_argv(self, job_ids: list[str]) -> list[str]:
        return [*self.options["status_command"], *job_ids, "-af", "ClusterId", "JobStatus"]

    def parse_status(self, result: CommandResult, job_ids: list[str]) -> dict[str, JobState]:
        if result.returncode != 0:
            raise PollError(result.describe())
        natives: dict[str, list[str]] = {}
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit():
                natives.setdefault(parts[0], []).append(parts[1])
        return {
            j: JobState(aggregate(STATES.get(s, UNKNOWN) for s in natives[j]), ",".join(sorted(set(natives[j]))))
            for j in job_ids
            if j in natives
        }
