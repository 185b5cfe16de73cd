"""What every batch-system launcher shares: render, submit, poll with back-off, cancel.

A system module (slurm.py, pbs.py, ...) only says how its commands are spelled and how
their output reads; the job script itself comes from ``templates/<system>/<role>.sh.j2``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..config import defaults_config
from ..paths import ProfileDir
from .base import CANCELLED, DONE, FAILED, HELD, PENDING, RUNNING, UNKNOWN, Launcher, LauncherError
from .clock import status_env
from .jobscript import JobScript, RenderedJob
from .ledger import JobRecord, forget_jobs, record_job
from .shell import CommandResult, run_command

FINAL = frozenset({DONE, FAILED, CANCELLED})
# When one job (or array) has tasks in several states, the first listed wins.
# What a job script kept in the profile says in place of the connection info (see BatchLauncher.submit_private).
SCRUBBED = "<not kept in this file: the scheduler was given a private copy of this job at submission>"
_PRECEDENCE = (RUNNING, PENDING, HELD, UNKNOWN, FAILED, CANCELLED, DONE)


class PollError(RuntimeError):
    """A status command failed or printed something unreadable; says nothing about the jobs."""


def aggregate(states: Iterable[str]) -> str:
    """One state for many tasks or jobs: anything still active wins over anything final."""
    present = set(states)
    for state in _PRECEDENCE:
        if state in present:
            return state
    return UNKNOWN


@dataclass
class JobState:
    state: str
    native: str = ""
    detail: str = ""
    # When the scheduler says the job started (epoch seconds), where its status output tells;
    # None elsewhere (the pool then dates the start from when it first saw the job running).
    started: float | None = None


@dataclass
class _PollState:
    interval: float
    next_at: float = 0.0
    failures: int = 0
    last_error: str = ""
    states: dict[str, JobState] = field(default_factory=dict)


class BatchLauncher(JobScript, Launcher):
    """Base of the launchers that submit job scripts to a batch system."""

    name: ClassVar[str] = ""
    # Directive prefix, e.g. "#SBATCH"; extra_directives get it prepended.
    prefix: ClassVar[str] = ""
    # Per-task index variable of a job array, for logs and docs.
    array_index_var: ClassVar[str] = ""
    # True where query() answers about one array task, asked by the id an engine in it
    # reports (engine/batchjob.py task_id: 17_3, 17.3); elsewhere an array is one job.
    asks_tasks: ClassVar[bool] = False
    # Output file patterns: a job id, and an array task.
    output_pattern: ClassVar[str] = ""
    array_output_pattern: ClassVar[str] = ""
    template_suffix: ClassVar[str] = ".sh.j2"
    supports_mpi: ClassVar[bool] = True
    # Can the engine job start one forwarder per node ([batch] forwarder_per_node)?
    supports_forwarder_per_node: ClassVar[bool] = False
    # Cancel output lines meaning "that job is already gone" or plain success chatter.
    gone_patterns: ClassVar[tuple[str, ...]] = ()
    ok_patterns: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        role: str,
        n: int = 1,
        profile_dir: ProfileDir | str | os.PathLike | None = None,
        cluster_id: str = "",
        options: dict[str, Any] | None = None,
        job_ids: Iterable[str] = (),
        **extra: Any,
    ) -> None:
        super().__init__(role=role, n=n)
        self.options: dict[str, Any] = {
            **defaults_config().launcher_options(self.name, role),
            **(options or {}),
            **extra,
        }
        if profile_dir is not None and not isinstance(profile_dir, ProfileDir):
            profile_dir = ProfileDir(Path(profile_dir))
        self.profile_dir: ProfileDir | None = profile_dir
        self.cluster_id = cluster_id
        self.job_ids: list[str] = [str(j) for j in job_ids]
        self.cancelled: set[str] = set()
        self._poll = _PollState(interval=float(self.options["poll_interval"]))

    def file_stem(self) -> str:
        suffix = f"-{self.cluster_id}" if self.cluster_id else ""
        return f"{self.role}{suffix}.{self.name}"

    # ----- submission -----------------------------------------------------------------
    def submit_argv(self, path: Path) -> list[str]:
        return [*self.options["submit_command"], str(path)]

    def submit_input(self, path: Path, text: str) -> str | None:
        """Text for the submit command's stdin (LSF reads the script there)."""
        return None

    def parse_job_id(self, output: str) -> str:
        raise NotImplementedError

    def write_files(self, job: RenderedJob) -> dict[str, Path]:
        """Write the files private to the user (0600, scripts 0700): they may carry the cluster key."""
        if self.profile_dir is not None:
            directory = self.profile_dir.run
            directory.mkdir(parents=True, exist_ok=True)
        else:
            directory = Path(tempfile.mkdtemp(prefix="hpcpar-"))
        paths = {name: directory / name for name in job.files}
        self._rewrite(job, paths)
        return paths

    @staticmethod
    def _rewrite(job: RenderedJob, paths: dict[str, Path]) -> None:
        for name, text in job.files.items():
            mode = 0o700 if name.endswith(".sh") else 0o600
            fd = os.open(paths[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(paths[name], mode)

    def start(self, command: list[str], env: dict[str, str], log_path: str) -> None:
        from ..connection import CONNECTION_ENV

        job = self.render(command, env, log_path)
        if env.get(CONNECTION_ENV) is None:
            paths = self.write_files(job)
            for _ in range(job.copies):
                self.submit(paths[job.submit_file], job.script)
            return
        # The connection info holds the cluster key: the profile (often on a shared disk) only
        # ever gets the files without it; the scheduler is handed a private copy (see submit_private).
        paths = self.write_files(self.render(command, {**env, CONNECTION_ENV: SCRUBBED}, log_path))
        self.submit_private(job, paths)

    def submit_private(self, job: RenderedJob, paths: dict[str, Path]) -> None:
        """Submit ``job`` from a 0700 directory of this host's temporary space, removed at once.

        The scheduler keeps its own copy of a submitted script (sbatch and qsub spool it, the
        PBS wrappers go through sbatch, bsub reads stdin, HPC Pack reads the job file at
        submission), so the key never lands in a file on the shared disk. The submit command
        runs in the profile's directory (the job's working directory) and the ledger names the
        copy kept there.
        """
        private = Path(tempfile.mkdtemp(prefix="hpcpar-submit-"))
        try:
            copies = {name: private / name for name in job.files}
            self._rewrite(job, copies)
            for _ in range(job.copies):
                self.submit(copies[job.submit_file], job.script, cwd=paths[job.submit_file].parent,
                            record_as=paths[job.submit_file])
        finally:
            shutil.rmtree(private, ignore_errors=True)

    def submit(self, path: Path, text: str, cwd: Path | None = None, record_as: Path | None = None) -> str:
        """Submit one file, record the id in the ledger at once, return the id."""
        result = run_command(
            self.submit_argv(path),
            input=self.submit_input(path, text),
            timeout=float(self.options["command_timeout"]),
            cwd=str(cwd or path.parent),
            setting=f"{self.name}.submit_command",
        )
        if result.returncode != 0:
            raise LauncherError(f"{self.name} rejected the {self.role} job: {result.describe()}")
        try:
            job_id = self.parse_job_id(result.stdout)
        except ValueError as e:
            raise LauncherError(
                f"could not read a job id from {self.name}'s answer ({e}): {result.describe()}"
            ) from None
        self.job_ids.append(job_id)
        if self.profile_dir is not None:
            record_job(
                self.profile_dir,
                self.cluster_id,
                JobRecord(self.name, self.role, job_id, self.cancel_argv([]), str(record_as or path)),
            )
        return job_id

    # ----- polling --------------------------------------------------------------------
    def status_argv(self, job_ids: list[str]) -> list[str]:
        raise NotImplementedError

    def parse_status(self, result: CommandResult, job_ids: list[str]) -> dict[str, JobState]:
        """States of the jobs the output mentions; raise PollError when it cannot be read.

        Jobs the output does not mention have left the queue; they count as done.
        """
        raise NotImplementedError

    def query(self, job_ids: list[str]) -> dict[str, JobState]:
        """One status call for all ``job_ids`` (subclasses may need a second, e.g. fallback)."""
        result = run_command(
            self.status_argv(job_ids),
            timeout=float(self.options["command_timeout"]),
            env=status_env(),  # times printed in UTC (see clock.py)
            setting=f"{self.name}.status_command",
        )
        return self.parse_status(result, job_ids)

    # ----- why a job waits (shown by `hpcpar start` while jobs queue) ---------------------
    def reason_argv(self, job_id: str) -> list[str] | None:
        """The command that says why ``job_id`` is still queued; None where there is none."""
        return None

    def parse_reason(self, output: str) -> str:
        return ""

    def pending_reason(self, job_id: str) -> str:
        """The scheduler's own words for why ``job_id`` waits; "" when it gives none or
        cannot be asked (this only decorates a progress line: it never raises)."""
        argv = self.reason_argv(job_id)
        if argv is None:
            return ""
        try:
            result = run_command(argv, timeout=min(10.0, float(self.options["command_timeout"])),
                                 setting=f"{self.name}.status_command")
        except LauncherError:
            return ""
        return self.parse_reason(result.stdout).strip() if result.returncode == 0 else ""

    def releasing(self, state: JobState) -> bool:
        """True for a final state the scheduler still holds the job in (SGE's ``dr``)."""
        return False

    def unreleased(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        """The jobs the scheduler still holds (queued, running, being deleted); one status
        call, no back-off: what ``hpcpar stop`` waits on."""
        ids = [str(j) for j in job_ids]
        if not ids:
            return {}
        found = self.query(ids)
        return {j: s for j, s in found.items() if s.state not in FINAL or self.releasing(s)}

    def poll(self, force: bool = False) -> dict[str, JobState]:
        """Job states, asking the scheduler at most once per back-off interval.

        The interval starts at poll_interval and doubles (up to poll_max_interval) while
        nothing changes. A failed status command leaves the last known states alone; after
        poll_error_threshold failures in a row the jobs become "unknown", never "failed".
        """
        p = self._poll
        now = time.monotonic()
        if not force and now < p.next_at:
            return dict(p.states)
        active = [j for j in self.job_ids if p.states.get(j, JobState(PENDING)).state not in FINAL]
        changed = False
        if active:
            try:
                found = self.query(active)
            except (LauncherError, PollError) as e:
                p.failures += 1
                p.last_error = str(e)
                if p.failures >= int(self.options["poll_error_threshold"]):
                    for j in active:
                        p.states[j] = JobState(UNKNOWN, "", f"status unavailable: {e}")
            else:
                p.failures, p.last_error = 0, ""
                for j in active:
                    new = found.get(j, JobState(DONE, "", "no longer in the queue"))
                    if j in self.cancelled and new.state in (DONE, FAILED):
                        new = JobState(CANCELLED, new.native, new.detail)
                    old = p.states.get(j)
                    changed = changed or old is None or old.state != new.state
                    p.states[j] = new
        maximum = float(self.options["poll_max_interval"])
        base = float(self.options["poll_interval"])
        p.interval = base if changed else min(maximum, p.interval * 2)
        p.next_at = time.monotonic() + p.interval
        return dict(p.states)

    def status(self) -> str:
        if not self.job_ids:
            return UNKNOWN
        states = self.poll()
        return aggregate(states[j].state if j in states else PENDING for j in self.job_ids)

    def wait(self, until: Iterable[str], timeout: float) -> str:
        """Poll (with back-off) until the aggregate state is in ``until``; return it."""
        wanted = set(until)
        deadline = time.monotonic() + timeout
        while True:
            state = self.status()
            if state in wanted:
                return state
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.describe()} still {state} after {timeout:g} s")
            time.sleep(max(0.05, min(remaining, self._poll.next_at - time.monotonic())))

    # ----- cancelling -----------------------------------------------------------------
    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return [*self.options["cancel_command"], *job_ids]

    def cancel_tolerated(self, result: CommandResult) -> bool:
        """True when a failed cancel only reports jobs that are already gone."""
        lines = [line for line in result.output.splitlines() if line.strip()]
        if not lines:
            return False
        patterns = [re.compile(p, re.IGNORECASE) for p in (*self.gone_patterns, *self.ok_patterns)]
        gone = [re.compile(p, re.IGNORECASE) for p in self.gone_patterns]
        return any(g.search(line) for g in gone for line in lines) and all(
            any(p.search(line) for p in patterns) for line in lines
        )

    def cancel(self, job_ids: list[str], timeout: float | None = None) -> None:
        if not job_ids:
            return
        result = run_command(
            self.cancel_argv(job_ids),
            timeout=max(timeout or 0.0, float(self.options["command_timeout"])),
            setting=f"{self.name}.cancel_command",
        )
        if result.returncode != 0 and not self.cancel_tolerated(result):
            raise LauncherError(f"could not cancel {self.name} job(s) {', '.join(job_ids)}: {result.describe()}")

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel every job not known to be finished; jobs already gone are fine."""
        states = self._poll.states
        ids = [j for j in self.job_ids if j not in states or states[j].state not in FINAL]
        self.cancel(ids, timeout)
        self.cancelled.update(ids)
        for j in ids:
            states[j] = JobState(CANCELLED, "", "cancelled by hpcpar")
        if self.profile_dir is not None:
            forget_jobs(self.profile_dir, self.cluster_id, set(self.job_ids))

    # ----- persistence ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "launcher": self.name,
            "role": self.role,
            "n": self.n,
            "profile_dir": str(self.profile_dir.path) if self.profile_dir else None,
            "cluster_id": self.cluster_id,
            "options": self.options,
            "job_ids": list(self.job_ids),
            "cancelled": sorted(self.cancelled),
        }

    @classmethod
    def from_config(
        cls, role: str, n: int, config: Any, *, profile_dir: ProfileDir | None = None, cluster_id: str = ""
    ) -> BatchLauncher:
        """Built by ``Cluster`` (``hpcpar start --engines slurm``) from the merged config;
        checked, so nothing impossible is submitted."""
        launcher = cls(role=role, n=n, profile_dir=profile_dir, cluster_id=cluster_id,
                       options=config.launcher_options(cls.name, role))
        launcher.check()
        return launcher

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchLauncher:
        self = cls(
            role=data.get("role", "engines"),
            n=int(data.get("n", 1)),
            profile_dir=data.get("profile_dir"),
            cluster_id=data.get("cluster_id", ""),
            options=data.get("options") or {},
            job_ids=data.get("job_ids", []),
        )
        self.cancelled = set(data.get("cancelled", []))
        return self

    def describe(self) -> str:
        ids = ", ".join(self.job_ids) or "not submitted"
        return f"{self.name} {self.role} (job {ids})"
