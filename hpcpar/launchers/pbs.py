"""PBS Pro / OpenPBS (``pbs``) and Torque / PBS classic (``torque``).

Both: qsub prints ``123.server`` (arrays ``123[].server``); ids are compared on their
numeric part because default qstat output truncates server names. PBS Pro is polled with
``qstat -f -F json -x`` (history included), falling back to ``qstat -f`` text where -F is
unknown (Torque, and SLURM's qsub wrappers, which print bare ids and exit 153 for an
unknown id).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..config.units import format_hms
from .base import CANCELLED, DONE, FAILED, HELD, PENDING, RUNNING, UNKNOWN, LauncherError
from .batch import BatchLauncher, JobState, PollError
from .clock import read_time, status_env
from .formats import mebibytes
from .shell import CommandResult, run_command

STATES = {
    "Q": PENDING,  # queued
    "W": PENDING,  # waiting for its start time
    "T": PENDING,  # in transit
    "M": PENDING,  # moved to another server
    "H": HELD,
    "S": HELD,  # suspended
    "U": HELD,  # suspended: workstation busy
    "R": RUNNING,
    "E": RUNNING,  # exiting
    "B": RUNNING,  # array job: at least one subjob started
    "X": DONE,  # subjob expired (finished)
    "F": DONE,  # finished (PBS Pro), refined by Exit_status
    "C": DONE,  # completed (Torque), refined by exit_status
}
# qstat / qdel messages about ids the server no longer knows.
GONE = (
    r"Unknown Job Id",
    r"Job has finished",
    r"has finished",
    r"invalid state for job - COMPLETE",
    r"Request invalid for state of job",
)
PBSE_UNKJOBID_RC = 153  # 15001 & 0xff: what qstat exits with for an unknown id
_ID_LINE = re.compile(r"^(\d+(?:\[\d*\])?)(?:\.[\w.-]+)?$")


def parse_qsub_id(output: str) -> str:
    """``123.server``, ``123[].server`` or a bare ``123``, after any banner lines."""
    for line in reversed(output.strip().splitlines()):
        if _ID_LINE.match(line.strip()):
            return line.strip()
    raise ValueError("no line holds a PBS job id")


def numeric_id(job_id: str) -> str:
    """``123[].server.domain`` -> ``123``: robust against truncated server names."""
    m = re.match(r"^(\d+)", job_id.strip())
    return m.group(1) if m else job_id.strip()


def finished_state(native: str, exit_status: Any) -> str:
    if native not in ("F", "C") or exit_status in (None, ""):
        return STATES.get(native, UNKNOWN)
    try:
        code = int(exit_status)
    except (TypeError, ValueError):
        return DONE
    if code == 0:
        return DONE
    if code > 256 or code in (-11, 271, 265):  # killed by a signal: qdel, walltime
        return CANCELLED
    return FAILED


def parse_qstat_json(text: str, job_ids: list[str]) -> dict[str, JobState]:
    try:
        jobs = json.loads(text).get("Jobs", {}) if text.strip() else {}
    except (json.JSONDecodeError, AttributeError) as e:
        raise PollError(f"qstat -F json printed invalid JSON ({e})")
    by_number = {numeric_id(k): v for k, v in jobs.items()}
    found: dict[str, JobState] = {}
    for job_id in job_ids:
        info = by_number.get(numeric_id(job_id))
        if info is not None:
            native = str(info.get("job_state", ""))
            state = finished_state(native, info.get("Exit_status", info.get("exit_status")))
            found[job_id] = JobState(state, native, started=start_time(state, {"stime": info.get("stime")}))
    return found


def parse_qstat_full(text: str, job_ids: list[str]) -> dict[str, JobState]:
    """``qstat -f`` text: ``Job Id: N`` blocks with ``job_state = X`` attribute lines."""
    blocks: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        head = re.match(r"^Job Id:\s*(\S+)", line)
        if head:
            current = blocks.setdefault(numeric_id(head.group(1)), {})
            continue
        attr = re.match(r"^\s+([\w.]+)\s*=\s*(.*)$", line)
        if attr and current is not None:
            current[attr.group(1).lower()] = attr.group(2).strip()
    found: dict[str, JobState] = {}
    for job_id in job_ids:
        info = blocks.get(numeric_id(job_id))
        if info is not None and "job_state" in info:
            native = info["job_state"]
            state = finished_state(native, info.get("exit_status"))
            found[job_id] = JobState(state, native, started=start_time(state, info))
    return found


def start_time(state: str, info: dict[str, Any]) -> float | None:
    """When a running job started: ``stime`` (PBS Pro), ``start_time`` (Torque); SLURM's
    qstat wrapper has neither and prints the start as ``mtime`` (only trusted then: on real
    PBS mtime is the last change)."""
    if state != RUNNING:
        return None
    for key in ("stime", "start_time"):
        if info.get(key):
            return read_time(str(info[key]))
    return read_time(info.get("mtime"))


def check_qstat_result(result: CommandResult) -> None:
    """A failed qstat is fine only when it complains about ids it no longer knows."""
    if result.returncode == 0:
        return
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if all(any(re.search(p, line, re.IGNORECASE) for p in GONE) for line in lines):
        if lines or result.returncode == PBSE_UNKJOBID_RC:
            return
    raise PollError(result.describe())


class PBSLauncher(BatchLauncher):
    """PBS Pro / OpenPBS: ``-l select=`` chunks and ``-J`` arrays (rerunnable, >= 2 subjobs)."""

    name = "pbs"
    prefix = "#PBS"
    array_index_var = "PBS_ARRAY_INDEX"
    gone_patterns = GONE
    ok_patterns = ()

    def output_paths(self, log_path: str, array: bool) -> tuple[str, str]:
        """A directory: PBS names the files itself (no job-id placeholder in -o)."""
        o = self.options
        if o["output"]:
            return o["output"], o["error"]
        return str(Path(log_path).parent) + "/", o["error"]

    def chunks(self, ctx: dict[str, Any]) -> tuple[int, int, int]:
        """(chunks, ncpus per chunk, MPI processes per chunk) for -l select=."""
        cpus = ctx["cpus_per_engine"]
        if not ctx["mpi"]:
            return 1, ctx["job_cpus"], 1
        per = ctx["tasks_per_node"]
        if per:
            return ctx["nodes"] or -(-ctx["ntasks"] // per), per * cpus, per
        return ctx["ntasks"], cpus, 1

    def system_context(self, ctx: dict[str, Any]) -> dict[str, Any]:
        count, ncpus, procs = self.chunks(ctx)
        select = f"{count}:ncpus={ncpus}"
        if ctx["mpi"]:
            select += f":mpiprocs={procs}"
        per_chunk = procs if ctx["mpi"] else ctx["engines_per_job"]
        if ctx["job_gpus"]:
            select += f":ngpus={ctx['job_gpus'] * (procs if ctx['mpi'] else 1)}"
        if ctx["memory_bytes"]:
            select += f":mem={mebibytes(ctx['memory_bytes'] * per_chunk)}mb"
        if self.options.get("select_extra"):
            select += ":" + self.options["select_extra"]
        return {
            "walltime": format_hms(ctx["walltime_seconds"]) if ctx["walltime_seconds"] else "",
            "select": select,
            "place": self.options.get("place", ""),
        }

    def parse_job_id(self, output: str) -> str:
        return parse_qsub_id(output)

    def status_argv(self, job_ids: list[str], fmt: str = "json") -> list[str]:
        flags = ["-f", "-F", "json", "-x"] if fmt == "json" else ["-f"]
        return [*self.options["status_command"], *flags, *job_ids]

    def query(self, job_ids: list[str]) -> dict[str, JobState]:
        fmt = self.options.get("status_format", "auto")
        timeout = float(self.options["command_timeout"])
        if fmt in ("auto", "json"):
            result = run_command(self.status_argv(job_ids, "json"), timeout=timeout, env=status_env())
            rejected = re.search(r"(invalid|unknown|illegal) option|usage", result.output, re.I)
            if not (fmt == "auto" and result.returncode != 0 and rejected):
                check_qstat_result(result)
                return parse_qstat_json(result.stdout, job_ids)
            # This qstat has no JSON output (Torque, SLURM's wrappers): use text from now on.
            self.options["status_format"] = "text"
        result = run_command(self.status_argv(job_ids, "text"), timeout=timeout, env=status_env())
        check_qstat_result(result)
        return parse_qstat_full(result.stdout, job_ids)

    def reason_argv(self, job_id: str) -> list[str] | None:
        return [*self.options["status_command"], "-f", job_id]

    def parse_reason(self, output: str) -> str:
        """The scheduler's ``comment`` of qstat -f ("Not Running: Insufficient amount of resource: ncpus")."""
        m = re.search(r"^\s*comment = (.*(?:\n\t.*)*)", output, re.MULTILINE)
        return re.sub(r"\s*\n\t\s*", "", m.group(1)).strip() if m else ""

    def cancel_tolerated(self, result: CommandResult) -> bool:
        # SLURM's qdel wrapper exits 1 silently for a finished job; real PBS explains itself.
        return not result.output.strip() or super().cancel_tolerated(result)

    def check(self) -> None:
        super().check()
        if self.mode == "array" and self.n < 2:
            raise LauncherError("PBS Pro job arrays need at least 2 subjobs")


class TorqueLauncher(PBSLauncher):
    """Torque / PBS classic: ``-l nodes=N:ppn=P`` and ``-t`` arrays."""

    name = "torque"
    array_index_var = "PBS_ARRAYID"

    def system_context(self, ctx: dict[str, Any]) -> dict[str, Any]:
        count, ppn, procs = self.chunks(ctx)
        total = ctx["memory_bytes"] * (ctx["ntasks"] if ctx["mpi"] else ctx["engines_per_job"])
        gpus = f":gpus={ctx['job_gpus'] * (procs if ctx['mpi'] else 1)}" if ctx["job_gpus"] else ""
        return {
            "walltime": format_hms(ctx["walltime_seconds"]) if ctx["walltime_seconds"] else "",
            "nodes_spec": f"{count}:ppn={ppn}{gpus}",
            "memory": f"{mebibytes(total)}mb" if total else "",
        }

    def query(self, job_ids: list[str]) -> dict[str, JobState]:
        result = run_command(self.status_argv(job_ids, "text"), timeout=float(self.options["command_timeout"]),
                             env=status_env())
        check_qstat_result(result)
        return parse_qstat_full(result.stdout, job_ids)
