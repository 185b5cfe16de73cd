"""Microsoft HPC Pack: a job XML submitted with ``job submit /jobfile:``.

Engines are one parametric task (the HPC Pack job array); ``job view`` per job for
status, ``job cancel`` to stop.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from .base import CANCELLED, DONE, FAILED, PENDING, RUNNING, UNKNOWN, LauncherError
from .batch import BatchLauncher, JobState, PollError
from .shell import CommandResult, run_command

STATES = {
    "configuring": PENDING,
    "submitted": PENDING,
    "validating": PENDING,
    "externalvalidation": PENDING,
    "queued": PENDING,
    "running": RUNNING,
    "finishing": RUNNING,
    "canceling": RUNNING,
    "finished": DONE,
    "failed": FAILED,
    "canceled": CANCELLED,
    "cancelled": CANCELLED,
}


def parse_job_submit_id(output: str) -> str:
    """``Job has been submitted. ID: 42.``; otherwise the last number printed."""
    m = re.findall(r"\bID:\s*(\d+)", output)
    if m:
        return m[-1]
    numbers = re.findall(r"\b(\d+)\b", output)
    if numbers:
        return numbers[-1]
    raise ValueError("no job id in the output of `job submit`")


def parse_job_view(output: str) -> JobState:
    m = re.search(r"^\s*State\s*:\s*(\w+)", output, re.MULTILINE)
    if not m:
        raise PollError(f"`job view` printed no State line: {output.strip()[:200]!r}")
    return JobState(STATES.get(m.group(1).lower(), UNKNOWN), m.group(1))


class WinHPCLauncher(BatchLauncher):
    name = "winhpc"
    prefix = ""
    array_index_var = ""
    output_pattern = "*"
    array_output_pattern = "*"
    template_suffix = ".xml.j2"
    gone_patterns = (r"already", r"does not exist", r"not found")
    supports_gpus = False  # the job XML has no GPU unit hpcpar could fill in
    supports_engines_per_job = False  # an array is already one job (a parametric task)

    def launch_line(self, command: list[str], layout: dict[str, Any]) -> str:
        """Windows quoting (CommandLine is parsed by the C runtime, not a POSIX shell)."""
        if layout["mpi"]:
            command = [self.options["mpiexec"], "-n", str(layout["ntasks"]), *self.options["mpi_args"], *command]
        return subprocess.list2cmdline(command)

    def scheduler_args(self) -> list[str]:
        head = self.options["scheduler"]
        return [f"/scheduler:{head}"] if head else []

    def check(self) -> None:
        super().check()
        if self.role == "engines" and int(self.options.get("array_limit", 0)):
            raise LauncherError("winhpc cannot cap the running tasks of a parametric task: set array_limit = 0 "
                                "(HPC Pack's MaxCores on the job limits how many run at once)")
        if self.options["prologue"] or self.options["epilogue"]:
            raise LauncherError(
                "winhpc runs one command line per task: prologue and epilogue are not supported "
                "(wrap the command in a .bat or .ps1 file instead)"
            )

    def output_paths(self, log_path: str, array: bool) -> tuple[str, str]:
        o = self.options
        if o["output"]:
            return o["output"], o["error"]
        base = re.sub(r"\.log$", "", log_path.replace("{index}", "").rstrip("-."))
        # In a parametric task '*' becomes the index; otherwise one file per job.
        out = f"{base}-*.out" if array else f"{base}.out"
        return out, o["error"] or out.replace(".out", ".err")

    def system_context(self, ctx: dict[str, Any]) -> dict[str, Any]:
        cores = ctx["cpus_per_engine"] * ctx["ntasks"]
        return {
            "priority": self.options["priority"],
            "project": self.options["project"],
            "exclusive": "true" if self.options["exclusive"] else "false",
            "work_directory": self.options["work_directory"] or ctx["profile_dir"],
            "cores": cores,
            "task_name": "hpcpar-engine" if self.role == "engines" else "hpcpar-controller",
        }

    def submit_argv(self, path: Path) -> list[str]:
        return [*self.options["job_command"], "submit", f"/jobfile:{path}", *self.scheduler_args()]

    def parse_job_id(self, output: str) -> str:
        return parse_job_submit_id(output)

    def query(self, job_ids: list[str]) -> dict[str, JobState]:
        found: dict[str, JobState] = {}
        for job_id in job_ids:
            result = run_command(
                [*self.options["job_command"], "view", job_id, *self.scheduler_args()],
                timeout=float(self.options["command_timeout"]),
            )
            if result.returncode != 0:
                if re.search(r"does not exist|not found", result.output, re.IGNORECASE):
                    continue
                raise PollError(result.describe())
            found[job_id] = parse_job_view(result.stdout)
        return found

    def cancel(self, job_ids: list[str], timeout: float | None = None) -> None:
        for job_id in job_ids:
            result = run_command(
                [*self.options["job_command"], "cancel", job_id, *self.scheduler_args()],
                timeout=max(timeout or 0.0, float(self.options["command_timeout"])),
            )
            if result.returncode != 0 and not self.cancel_tolerated(result):
                raise LauncherError(f"could not cancel winhpc job {job_id}: {result.describe()}")

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return [*self.options["job_command"], "cancel", *job_ids]

    def status_argv(self, job_ids: list[str]) -> list[str]:
        return [*self.options["job_command"], "view", *job_ids]

    def parse_status(self, result: CommandResult, job_ids: list[str]) -> dict[str, JobState]:
        return {job_ids[0]: parse_job_view(result.stdout)} if job_ids else {}
