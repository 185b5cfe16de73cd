"""SLURM: sbatch --parsable, one batched squeue per poll, scancel."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .base import CANCELLED, DONE, FAILED, HELD, PENDING, RUNNING, UNKNOWN, LauncherError
from .batch import BatchLauncher, JobState, PollError, aggregate
from .clock import earliest, read_time
from .formats import mebibytes, shjoin, slurm_time
from .shell import CommandResult

# Every state squeue prints (long form), mapped.
STATES = {
    "PENDING": PENDING,
    "CONFIGURING": PENDING,
    "REQUEUED": PENDING,
    "REQUEUE_FED": PENDING,
    "RESV_DEL_HOLD": HELD,
    "REQUEUE_HOLD": HELD,
    "SUSPENDED": HELD,
    "STOPPED": HELD,
    "RUNNING": RUNNING,
    "COMPLETING": RUNNING,
    "RESIZING": RUNNING,
    "SIGNALING": RUNNING,
    "STAGE_OUT": RUNNING,
    "COMPLETED": DONE,
    "CANCELLED": CANCELLED,
    "REVOKED": CANCELLED,
    "FAILED": FAILED,
    "TIMEOUT": FAILED,
    "NODE_FAIL": FAILED,
    "OUT_OF_MEMORY": FAILED,
    "BOOT_FAIL": FAILED,
    "DEADLINE": FAILED,
    "PREEMPTED": FAILED,
    "SPECIAL_EXIT": FAILED,
}
HELD_REASONS = ("JobHeldUser", "JobHeldAdmin")
_ID_LINE = re.compile(r"^(\d+)(?:_\d+)?(?:;\S+)?$")


def parse_sbatch_id(output: str) -> str:
    """The id from ``sbatch --parsable``: ``17`` or ``17;cluster``, after any banner lines."""
    for line in reversed(output.strip().splitlines()):
        m = _ID_LINE.match(line.strip())
        if m:
            return m.group(1)
    m = re.search(r"Submitted batch job (\d+)", output)
    if m:
        return m.group(1)
    raise ValueError("no line holds a job id")


class SlurmLauncher(BatchLauncher):
    name = "slurm"
    prefix = "#SBATCH"
    array_index_var = "SLURM_ARRAY_TASK_ID"
    asks_tasks = True  # squeue --jobs=17_3 reports that array task alone
    output_pattern = "%j"
    array_output_pattern = "%A_%a"
    gone_patterns = (r"Invalid job id", r"already completing or completed", r"Job has already finished")
    ok_patterns = (r"^scancel: (error|warning):",)

    def system_context(self, ctx: dict[str, Any]) -> dict[str, Any]:
        memory, flag = "", self.options["memory_flag"]
        if ctx["memory_bytes"]:
            if ctx["mpi"] or flag == "mem-per-cpu":
                flag = "mem-per-cpu"
                memory = f"{mebibytes(ctx['memory_bytes'] // ctx['cpus_per_engine'])}M"
            else:
                memory = f"{mebibytes(ctx['memory_bytes'] * ctx['engines_per_job'])}M"
        return {
            "walltime": slurm_time(ctx["walltime_seconds"]) if ctx["walltime_seconds"] else "",
            "memory": memory,
            "memory_flag": flag,
            "gpu_directive": self.gpu_directive(ctx),
        }

    def gpu_directive(self, ctx: dict[str, Any]) -> str:
        """--gpus-per-task (the job's one task, or each MPI rank) or --gres (per node)."""
        gpus = ctx["job_gpus"]
        if not gpus:
            return ""
        if self.options["gpu_flag"] == "gres":
            per_node = gpus * (ctx["tasks_per_node"] if ctx["mpi"] else 1)
            return f"--gres=gpu:{per_node}"
        return f"--gpus-per-task={gpus}"

    def check(self) -> None:
        super().check()
        o = self.options
        if (self.role == "engines" and self.mode == "mpi" and int(o.get("gpus_per_engine", 0))
                and o["gpu_flag"] == "gres" and not int(o["engines_per_node"])):
            raise LauncherError(
                'slurm: gpu_flag = "gres" asks for GPUs per node, so mode = "mpi" needs engines_per_node '
                '(how many ranks share a node); set it, or use gpu_flag = "gpus-per-task"'
            )

    supports_forwarder_per_node = True

    def launch_line(self, command: list[str], layout: dict[str, Any]) -> str:
        if layout["mpi"] and self.options["mpi_launcher"] == "srun":
            # --overlap: the engines share the nodes' CPUs with the forwarder step.
            overlap = ["--overlap"] if self.options.get("forwarder_per_node") else []
            return shjoin(["srun", *overlap, *self.options["mpi_args"], *command])
        return super().launch_line(command, layout)

    def forwarder_line(self, forwarder: list[str]) -> str:
        # One task on each node of the job, overlapping the engines' step. --ntasks too: srun
        # would otherwise take the job's task count from $SLURM_NTASKS.
        nodes = '--nodes="$SLURM_JOB_NUM_NODES" --ntasks="$SLURM_JOB_NUM_NODES"'
        return f"srun {nodes} " + shjoin(["--ntasks-per-node=1", "--overlap", *forwarder])

    def submit_argv(self, path: Path) -> list[str]:
        return [*self.options["submit_command"], "--parsable", str(path)]

    def parse_job_id(self, output: str) -> str:
        return parse_sbatch_id(output)

    def status_argv(self, job_ids: list[str]) -> list[str]:
        return [
            *self.options["status_command"],
            "--noheader",
            "--states=all",
            f"--jobs={','.join(job_ids)}",
            "--format=%F|%i|%T|%r|%S",
        ]

    def parse_status(self, result: CommandResult, job_ids: list[str]) -> dict[str, JobState]:
        return parse_squeue(result, job_ids)

    def reason_argv(self, job_id: str) -> list[str] | None:
        return [*self.options["status_command"], "--noheader", f"--jobs={job_id}", "--format=%T|%r"]

    def parse_reason(self, output: str) -> str:
        """squeue's %r of the pending tasks ("Resources", "Priority", "BeginTime" ...)."""
        reasons = [line.split("|", 1)[1].strip() for line in output.splitlines()
                   if line.startswith("PENDING|") and "|" in line]
        return ", ".join(dict.fromkeys(r for r in reasons if r and r != "None"))


def parse_squeue(result: CommandResult, job_ids: list[str]) -> dict[str, JobState]:
    """Group ``%F|%i|%T|%r|%S`` lines by array job id; one state per submitted job, started
    when its first running task did (%S of a pending job is a forecast: not used). An id
    asked as ``17_3`` gets that array task's own state (a pending ``17_[2-5]`` line counts)."""
    if result.returncode != 0:
        if "Invalid job id specified" in result.stderr:
            return {}  # every job asked about has left squeue's memory: finished
        raise PollError(result.describe())
    tasks: dict[str, list[tuple[str, str, float | None, str]]] = {}
    for line in result.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3:
            if line.strip():
                raise PollError(f"unexpected squeue line {line!r}")
            continue
        base, task, native = parts[0], parts[1], parts[2].split()[0]
        reason = parts[3] if len(parts) > 3 else ""
        state = STATES.get(native, UNKNOWN)
        if state == PENDING and reason in HELD_REASONS:
            state = HELD
        started = read_time(parts[4]) if len(parts) > 4 and state == RUNNING else None
        tasks.setdefault(base, []).append((state, native, started, task))
    found: dict[str, JobState] = {}
    for job_id in job_ids:
        base, _, task = job_id.partition("_")
        states = [t for t in tasks.get(base, []) if not task or (task.isdigit() and has_task(t[3], int(task)))]
        if states:
            combined = aggregate(s for s, _, _, _ in states)
            natives = sorted({n for _, n, _, _ in states})
            found[job_id] = JobState(combined, ",".join(natives), f"{len(states)} line(s)",
                                     earliest([t for _, _, t, _ in states]))
    return found


def has_task(line_id: str, task: int) -> bool:
    """Whether squeue's %i (``17_3``, or pending ``17_[2-4,7%2]``) holds array task ``task``."""
    ids = line_id.partition("_")[2]
    if ids.startswith("[") and ids.endswith("]"):
        for part in ids[1:-1].split("%")[0].split(","):
            lo, _, rest = part.partition("-")
            hi, _, step = rest.partition(":")
            if lo.isdigit() and (hi or lo).isdigit():
                first, last, every = int(lo), int(hi or lo), max(int(step) if step.isdigit() else 1, 1)
                if first <= task <= last and (task - first) % every == 0:
                    return True
        return False
    return ids.isdigit() and int(ids) == task
