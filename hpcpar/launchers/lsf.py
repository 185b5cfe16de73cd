"""IBM Spectrum LSF: the script goes to bsub on stdin, polled with one bjobs call.

Stdin because ``bsub script`` only reads #BSUB lines where lsf.conf sets
LSB_BSUB_PARSE_SCRIPT=Y; elsewhere LSF silently runs the file with no directives.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .base import DONE, FAILED, HELD, PENDING, RUNNING, UNKNOWN
from .batch import BatchLauncher, JobState, PollError, aggregate
from .formats import detect_lsf_unit, lsf_memory, lsf_time
from .shell import CommandResult

STATES = {
    "PEND": PENDING,
    "PROV": PENDING,  # provisioning resources
    "WAIT": PENDING,  # chunk job waiting
    "RUN": RUNNING,
    "PSUSP": HELD,  # suspended while pending (bstop / held)
    "USUSP": HELD,
    "SSUSP": HELD,
    "DONE": DONE,
    "EXIT": FAILED,
    "ZOMBI": FAILED,
    "UNKWN": UNKNOWN,
}


def parse_bsub_id(output: str) -> str:
    """``Job <123> is submitted to queue <normal>.``, after any esub banner lines."""
    found = re.findall(r"Job <(\d+)> is submitted", output)
    if not found:
        raise ValueError("no 'Job <N> is submitted' line")
    return found[-1]


def parse_bjobs(result: CommandResult, job_ids: list[str]) -> dict[str, JobState]:
    """``bjobs -a -noheader -o "jobid stat"``: one line per job or array element."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    unexplained = [line for line in lines if not re.search(r"is not found|No matching job", line)]
    if result.returncode != 0 and (unexplained or not lines):
        raise PollError(result.describe())
    natives: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            natives.setdefault(parts[0], []).append(parts[1])
        elif line.strip() and "is not found" not in line:
            raise PollError(f"unexpected bjobs line {line!r}")
    found: dict[str, JobState] = {}
    for job_id in job_ids:
        if job_id in natives:
            states = natives[job_id]
            found[job_id] = JobState(
                aggregate(STATES.get(s, UNKNOWN) for s in states), ",".join(sorted(set(states)))
            )
    return found


class LSFLauncher(BatchLauncher):
    name = "lsf"
    prefix = "#BSUB"
    array_index_var = "LSB_JOBINDEX"
    output_pattern = "%J"
    array_output_pattern = "%J_%I"
    gone_patterns = (r"already finished", r"No matching job", r"is not found")
    ok_patterns = (r"is being (terminated|signaled)",)

    def memory_unit(self) -> str:
        unit = self.options["memory_unit"]
        return detect_lsf_unit() if unit == "auto" else unit

    def system_context(self, ctx: dict[str, Any]) -> dict[str, Any]:
        cpus = ctx["job_cpus"]
        slots = cpus * ctx["ntasks"]
        per_host = ctx["tasks_per_node"] * cpus if ctx["mpi"] and ctx["tasks_per_node"] else 0
        memory = ""
        if ctx["memory_bytes"]:
            engines_per_host = (ctx["tasks_per_node"] or ctx["ntasks"]) if ctx["mpi"] else ctx["engines_per_job"]
            memory = lsf_memory(ctx["memory_bytes"] * engines_per_host, self.memory_unit())
        span = f"span[ptile={per_host}]" if per_host else ("span[hosts=1]" if not ctx["mpi"] and cpus > 1 else "")
        name = ctx["job_name"] + (f"[1-{ctx['array_size']}]" if ctx["array"] else "")
        if ctx["array"] and ctx["array_limit"]:
            name += f"%{ctx['array_limit']}"
        # -gpu num= counts per host; in mpi mode "/task" makes it per rank.
        gpu = ""
        if ctx["job_gpus"]:
            gpu = f"num={ctx['job_gpus']}/task" if ctx["mpi"] else f"num={ctx['job_gpus']}"
        return {
            "walltime": lsf_time(ctx["walltime_seconds"]) if ctx["walltime_seconds"] else "",
            "slots": slots,
            "span": span,
            "memory": memory,
            "lsf_job_name": name,
            "gpu": gpu,
        }

    def submit_argv(self, path: Path) -> list[str]:
        if self.options["submit_via_stdin"]:
            return list(self.options["submit_command"])
        return [*self.options["submit_command"], str(path)]

    def submit_input(self, path: Path, text: str) -> str | None:
        return text if self.options["submit_via_stdin"] else None

    def parse_job_id(self, output: str) -> str:
        return parse_bsub_id(output)

    def status_argv(self, job_ids: list[str]) -> list[str]:
        return [*self.options["status_command"], "-a", "-noheader", "-o", "jobid stat", *job_ids]

    def parse_status(self, result: CommandResult, job_ids: list[str]) -> dict[str, JobState]:
        return parse_bjobs(result, job_ids)

    def reason_argv(self, job_id: str) -> list[str] | None:
        return [*self.options["status_command"], "-p", job_id]

    def parse_reason(self, output: str) -> str:
        """The lines under "PENDING REASONS:" of bjobs -p."""
        lines, inside = [], False
        for line in output.splitlines():
            if line.strip().upper().startswith("PENDING REASONS"):
                inside = True
            elif inside and not line.strip():
                break
            elif inside:
                lines.append(line.strip().rstrip(";"))
        return "; ".join(dict.fromkeys(lines))
