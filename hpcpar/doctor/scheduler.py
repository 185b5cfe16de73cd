"""Scheduler checks: the submit / status / cancel commands exist, say their version,
and the scheduler answers; plus the reason a job is still pending, where it is easy."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable

from ..config import Config
from ..launchers.base import LauncherError
from ..launchers.shell import run_command
from .report import FAIL, INFO, OK, SKIP, Check

COMMAND_KEYS = ("submit_command", "status_command", "cancel_command")
QUICK = 20.0  # seconds for a version or status command: a healthy scheduler answers at once


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _run(argv: list[str], timeout: float = QUICK):
    try:
        return run_command(argv, timeout=timeout)
    except LauncherError:
        return None


def _slurm_version(cmd: str) -> str:
    r = _run([cmd, "--version"])
    return _first_line(r.stdout) if r and r.returncode == 0 else ""


def _sge_version(cmd: str) -> str:
    r = _run([cmd, "-help"])
    line = _first_line(r.stdout) if r else ""
    return line if re.match(r"^(SGE|UGE|OGS|GE|Grid ?Engine|Altair Grid)\b", line) else ""


def _pbs_version(cmd: str) -> str:
    r = _run([cmd, "--version"])
    if r and r.returncode == 0:
        m = re.search(r"(pbs_version\s*=\s*\S+|Version:\s*\S+)", r.output)
        if m:
            return m.group(1)
    path = shutil.which(cmd) or ""
    try:
        with open(path, errors="replace") as f:
            head = f.read(4096)
    except OSError:
        return ""
    if "slurm" in head.lower():
        return f"SLURM's PBS wrapper ({_slurm_version('sbatch') or 'slurm'})"
    return ""


def _lsf_version(cmd: str) -> str:
    r = _run([cmd, "-V"])  # LSF prints its version on stderr
    line = _first_line(r.output) if r and r.returncode == 0 else ""
    return line if "LSF" in line else ""


def _condor_version(cmd: str) -> str:
    r = _run(["condor_version"])
    return _first_line(r.stdout) if r and r.returncode == 0 else ""


VERSIONS: dict[str, Callable[[str], str]] = {
    "slurm": _slurm_version, "sge": _sge_version, "pbs": _pbs_version, "torque": _pbs_version,
    "lsf": _lsf_version, "htcondor": _condor_version,
}
# What "the scheduler answers" means per system: a cheap query of one's own jobs.
ALIVE = {
    "slurm": lambda status: [*status, "--noheader", "--me"],
    "sge": lambda status: [*status],
    "pbs": lambda status: [*status],
    "torque": lambda status: [*status],
    "lsf": lambda status: [*status],
    "htcondor": lambda status: [*status, "-totals"],
}


def commands_of(config: Config, system: str) -> dict[str, list[str]]:
    options = config.launcher_options(system, "engines")
    keys = ("job_command",) if system == "winhpc" else COMMAND_KEYS
    return {k: list(options[k]) for k in keys if options.get(k)}


def scheduler_checks(config: Config, system: str) -> list[Check]:
    """One row for the commands (with the version), one for whether the scheduler answers."""
    commands = commands_of(config, system)
    missing = [f"{' '.join(argv)} ({key})" for key, argv in commands.items() if not shutil.which(argv[0])]
    if missing:
        return [Check("scheduler-commands", FAIL, f"{system}: not found on PATH: {', '.join(missing)}",
                      f"run this on a login node of the {system} cluster (or load its module), or set "
                      f"the full path with --set {system}.<key>='[\"/path/to/cmd\"]'",
                      {"system": system, "missing": missing})]
    version = VERSIONS.get(system, lambda c: "")(commands.get("submit_command", commands.get("job_command", [""]))[0])
    names = ", ".join(shutil.which(argv[0]) or argv[0] for argv in commands.values())
    rows = [Check("scheduler-commands", OK, f"{system}: {names}" + (f"; {version}" if version else
                  "; no version reported"), "", {"system": system, "version": version})]
    alive = ALIVE.get(system)
    if alive is None or "status_command" not in commands:
        return rows
    r = _run(alive(commands["status_command"]), timeout=float(config["batch.command_timeout"]))
    if r is None or r.returncode != 0:
        why = r.describe() if r else f"`{' '.join(commands['status_command'])}` hung or vanished"
        fix = "check that the scheduler's daemons run (ask the site admins)"
        if system == "sge" and not os.environ.get("SGE_ROOT"):
            fix = "SGE_ROOT is not set: source $SGE_ROOT/<cell>/common/settings.sh (or load the SGE module)"
        rows.append(Check("scheduler-answers", FAIL, f"{system} did not answer: {why}", fix))
    else:
        rows.append(Check("scheduler-answers", OK, f"`{' '.join(r.argv)}` answered"))
    return rows


def detected_systems() -> list[Check]:
    """No batch system chosen: say which ones this host has, as information."""
    found = []
    if shutil.which("sbatch"):
        found.append(f"slurm ({_slurm_version('sbatch') or 'sbatch'})")
    if shutil.which("qsub"):
        sge = _sge_version("qsub")
        found.append(f"sge ({sge})" if sge else f"pbs/torque ({_pbs_version('qsub') or 'qsub'})")
    if shutil.which("bsub"):
        found.append("lsf")
    if shutil.which("condor_submit"):
        found.append("htcondor")
    result = f"no batch engines configured; on PATH: {', '.join(found) or 'no batch system'}"
    fix = "pass --engines SYSTEM (e.g. --engines slurm) to check it and submit a test job" if found else ""
    return [Check("scheduler-commands", SKIP if not found else INFO, result, fix)]


def pending_reason(system: str, job_id: str, timeout: float = QUICK) -> str:
    """Why the scheduler has not started ``job_id`` yet, or ""."""
    if system == "slurm":
        r = _run(["squeue", "--noheader", f"--jobs={job_id}", "--format=%r"], timeout)
        return _first_line(r.stdout) if r and r.returncode == 0 else ""
    if system == "sge":
        r = _run(["qstat", "-j", job_id], timeout)
        if r and r.returncode == 0:
            m = re.search(r"^scheduling info:\s*(.+)$", r.stdout, re.M)
            return m.group(1).strip() if m else ""
        return ""
    if system in ("pbs", "torque"):
        r = _run(["qstat", "-f", job_id], timeout)
        if r and r.returncode == 0:
            m = re.search(r"^\s*comment\s*=\s*(.+)$", r.stdout, re.M)
            return m.group(1).strip() if m else ""
        return ""
    if system == "lsf":
        r = _run(["bjobs", "-p", job_id], timeout)
        lines = r.stdout.splitlines()[1:] if r and r.returncode == 0 else []
        return " ".join(line.strip() for line in lines if line.strip())[:200]
    return ""
