"""Grid Engine (SGE, UGE, OGS): qsub -terse, one qstat -xml per poll, qdel.

Multi-core engines need a parallel environment (sites name them differently, so it is
configured: [sge] pe / mpi_pe), and memory resources count per slot.
"""

from __future__ import annotations

import getpass
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ..config.units import format_hms
from .base import CANCELLED, FAILED, HELD, PENDING, RUNNING, UNKNOWN, LauncherError
from .batch import BatchLauncher, JobState, PollError, aggregate
from .clock import earliest, read_time
from .formats import mebibytes
from .shell import CommandResult


def parse_terse_id(output: str) -> str:
    """``qsub -terse`` prints ``123``, or ``123.1-4:1`` for an array: the part before '.'."""
    for line in reversed(output.strip().splitlines()):
        m = re.match(r"^(\d+)(?:\.\d+-\d+:\d+)?$", line.strip())
        if m:
            return m.group(1)
    m = re.search(r"Your job(?:-array)? (\d+)", output)
    if m:
        return m.group(1)
    raise ValueError("no line holds an SGE job id")


def map_state(native: str) -> str:
    """SGE state letters combine (``hqw``, ``Eqw``, ``dr``); the most telling one wins."""
    if "E" in native:
        return FAILED  # error state: the job will never run without qmod -cj
    if "d" in native:
        return CANCELLED  # being deleted
    if "h" in native or "s" in native or "S" in native or "T" in native:
        return HELD
    if "r" in native or "t" in native or "R" in native:
        return RUNNING
    if "q" in native or "w" in native:
        return PENDING
    return UNKNOWN


def parse_qstat_xml(text: str, job_ids: list[str]) -> dict[str, JobState]:
    """One state per job from ``qstat -xml``; started: the first ``JAT_start_time`` of its
    running tasks (pending ones carry JB_submission_time instead). An id asked as ``17.3``
    gets that array task's own state: SGE lists a finished task of a live array no more."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise PollError(f"qstat -xml printed invalid XML ({e})")
    # job number -> its (tasks, state, start) lines
    rows: dict[str, list[tuple[str, str, float | None]]] = {j.split(".", 1)[0]: [] for j in job_ids}
    for entry in root.iter("job_list"):
        number = (entry.findtext("JB_job_number") or "").strip()
        if number not in rows:
            continue
        native = (entry.findtext("state") or "").strip()
        start = read_time(entry.findtext("JAT_start_time")) if map_state(native) == RUNNING else None
        rows[number].append(((entry.findtext("tasks") or "").strip(), native, start))
    found: dict[str, JobState] = {}
    for job_id in job_ids:
        number, _, task = job_id.partition(".")
        lines = [r for r in rows[number] if not task or (task.isdigit() and has_task(r[0], int(task)))]
        if lines:
            natives = [n for _, n, _ in lines]
            found[job_id] = JobState(aggregate(map_state(s) for s in natives), ",".join(sorted(set(natives))),
                                     started=earliest([t for _, _, t in lines]))
    return found


def has_task(tasks: str, task: int) -> bool:
    """Whether qstat's task column (``3``, or pending ranges ``4-10:2``, ``1,5-6:1``) holds ``task``."""
    for part in tasks.split(","):
        m = re.match(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$", part.strip())
        if m:
            lo, hi, step = int(m.group(1)), int(m.group(2) or m.group(1)), max(int(m.group(3) or 1), 1)
            if lo <= task <= hi and (task - lo) % step == 0:
                return True
    return False


class SGELauncher(BatchLauncher):
    name = "sge"
    prefix = "#$"
    array_index_var = "SGE_TASK_ID"
    asks_tasks = True  # qstat -xml lists each started array task (and pending ranges)
    output_pattern = "$JOB_ID"
    array_output_pattern = "$JOB_ID.$TASK_ID"
    gone_patterns = (r"does not exist",)
    ok_patterns = (r"has (registered|deleted) the job", r"has deleted job")

    def slots(self, ctx: dict[str, Any]) -> int:
        return ctx["job_cpus"] * (ctx["ntasks"] if ctx["mpi"] else 1)

    def _check_pe(self) -> None:
        super().check()
        cpus = int(self.options["cpus_per_engine"]) * self.engines_per_job
        if self.mode == "mpi" and not self.options["mpi_pe"]:
            raise LauncherError(
                "sge mode = \"mpi\" needs a parallel environment: set mpi_pe in [sge] "
                "(list them with `qconf -spl`, e.g. mpi_pe = \"mpi\")"
            )
        if self.mode != "mpi" and cpus > 1 and not self.options["pe"]:
            raise LauncherError(
                f"sge engine jobs of {cpus} slots (cpus_per_engine x engines_per_job) need a parallel "
                "environment: set pe "
                "in [sge] (list them with `qconf -spl`, e.g. pe = \"smp\")"
            )

    def system_context(self, ctx: dict[str, Any]) -> dict[str, Any]:
        slots = self.slots(ctx)
        pe = self.options["mpi_pe"] if ctx["mpi"] else (self.options["pe"] if slots > 1 else "")
        per_slot = ""
        if ctx["memory_bytes"]:
            # h_vmem and mem_free count per slot: ask for memory / cpus on each.
            per_slot = f"{mebibytes(-(-ctx['memory_bytes'] // ctx['cpus_per_engine']))}M"
        return {
            "walltime": format_hms(ctx["walltime_seconds"]) if ctx["walltime_seconds"] else "",
            "pe": pe,
            "slots": slots,
            "memory_resource": self.options["memory_resource"],
            "memory": per_slot,
            "gpu_resource": self.options["gpu_resource"],
            # The whole job's GPUs: GPU complexes are set up as consumable JOB (not per slot).
            "job_gpu_count": ctx["job_gpus"] * (ctx["ntasks"] if ctx["mpi"] else 1),
        }

    def check(self) -> None:
        self._check_pe()
        if int(self.options.get("gpus_per_engine", 0)) and not self.options["gpu_resource"]:
            raise LauncherError("sge: gpus_per_engine needs the name of the GPU resource: set gpu_resource in "
                                "[sge] (list the consumables with `qconf -sc`, e.g. gpu_resource = \"gpu\")")

    def releasing(self, state: JobState) -> bool:
        return "d" in state.native  # dr / dt: deleted, the execd has not let go yet

    def submit_argv(self, path: Path) -> list[str]:
        return [*self.options["submit_command"], "-terse", str(path)]

    def parse_job_id(self, output: str) -> str:
        return parse_terse_id(output)

    def status_argv(self, job_ids: list[str]) -> list[str]:
        # Without a job list: qstat -j is per job and verbose; -xml of one user is one call.
        return [*self.options["status_command"], "-xml", "-u", getpass.getuser()]

    def parse_status(self, result: CommandResult, job_ids: list[str]) -> dict[str, JobState]:
        if result.returncode != 0:
            raise PollError(result.describe())
        return parse_qstat_xml(result.stdout, job_ids)

    def reason_argv(self, job_id: str) -> list[str] | None:
        return [*self.options["status_command"], "-j", job_id.split(".")[0]]

    def parse_reason(self, output: str) -> str:
        """The "scheduling info:" lines of qstat -j (empty when the site turned them off)."""
        lines: list[str] = []
        inside = False
        for line in output.splitlines():
            if line.startswith("scheduling info:"):
                inside = True
                line = line.split(":", 1)[1]
            elif inside and re.match(r"^\S[^:]*:", line):
                break
            if inside and line.strip() and "information is turned off" not in line:
                lines.append(line.strip())
        return "; ".join(dict.fromkeys(lines))
