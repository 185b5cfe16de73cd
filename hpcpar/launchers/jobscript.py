"""A batch job's script: what one job asks for (its layout: mode, tasks, cpus, GPUs,
engines per job), the checks that refuse what a system cannot run, and the rendering of
``templates/<system>/<role>.sh.j2``. Submitting, polling and cancelling are in batch.py.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

from ..config.units import ceil_div, parse_memory, parse_walltime
from ..paths import ProfileDir
from .base import LauncherError
from .formats import sanitize_job_name, shjoin, strip_prefix
from .templating import render_template, template_search_path


@dataclass
class RenderedJob:
    """The files of one submission; ``copies`` > 1 submits the same file that many times."""

    launcher: str
    role: str
    files: dict[str, str]
    submit_file: str
    copies: int = 1

    @property
    def script(self) -> str:
        return self.files[self.submit_file]



class JobScript:
    """Layout, checks and rendering; a base of BatchLauncher, whose attributes it uses."""

    # Set by BatchLauncher and the system classes.
    name: ClassVar[str]
    prefix: ClassVar[str]
    array_index_var: ClassVar[str]
    output_pattern: ClassVar[str]
    array_output_pattern: ClassVar[str]
    template_suffix: ClassVar[str]
    supports_mpi: ClassVar[bool]
    supports_forwarder_per_node: ClassVar[bool]
    role: str
    n: int
    options: dict[str, Any]
    profile_dir: ProfileDir | None
    cluster_id: str

    def file_stem(self) -> str:
        raise NotImplementedError

    # ----- layout ---------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """single, array, jobs or mpi: how the n copies of the command are started."""
        if self.role == "controller":
            return "single"
        mode = self.options["mode"]
        if mode == "array" and self.job_count < 2:
            return "single"  # PBS Pro rejects 1-element arrays; nothing gains from one
        return mode

    @property
    def engines_per_job(self) -> int:
        """Engines one job (or array task) starts; 1 for the controller and for mpi mode."""
        if self.role == "controller" or self.options["mode"] == "mpi":
            return 1
        return max(1, int(self.options.get("engines_per_job", 1)))

    @property
    def job_count(self) -> int:
        """Jobs (or array tasks) that carry the n engines."""
        return ceil_div(self.n, self.engines_per_job)

    @property
    def mpi(self) -> bool:
        """True when one job starts all engines as MPI ranks (the engine needs --mpi)."""
        return self.mode == "mpi"

    def check(self) -> None:
        """Refuse option combinations this system cannot run, before anything is submitted."""
        if self.n < 1:
            raise LauncherError(f"{self.name} {self.role}: need at least one engine, got n={self.n}")
        self.check_engine_keys()
        if self.mode == "mpi" and not self.supports_mpi:
            raise LauncherError(
                f"{self.name} cannot start engines in mode = \"mpi\"; use mode = \"array\" or \"jobs\""
            )
        if self.role == "engines" and self.options.get("forwarder_per_node"):
            if not self.supports_forwarder_per_node:
                raise LauncherError(
                    f"{self.name}: forwarder_per_node = true is not supported for {self.name} yet (SLURM only); "
                    "set it to false, or run 'hpcpar forwarder' in your own job script (docs/site-admin.md)"
                )
            if self.mode != "mpi":
                raise LauncherError(
                    f"{self.name}: forwarder_per_node = true needs mode = \"mpi\" (one job whose tasks span "
                    f"the nodes), not mode = {self.mode!r}; in array or jobs mode each engine is its own job"
                )

    def check_engine_keys(self) -> None:
        """engines_per_job, gpus_per_engine and array_limit: refuse what cannot be rendered."""
        o = self.options
        per_job = int(o.get("engines_per_job", 1))
        if self.role != "engines":
            return
        if per_job > 1 and o["mode"] == "mpi":
            raise LauncherError(
                f"{self.name}: engines_per_job = {per_job} does not apply to mode = \"mpi\" (one job of "
                "MPI ranks) except in an elastic pool (--min/--max: one MPI set per job); use "
                "engines_per_node there, or mode = \"array\" / \"jobs\""
            )
        if per_job > 1 and self.n % per_job:
            lower, upper = self.n - self.n % per_job, self.n - self.n % per_job + per_job
            fix = f"-n {lower} or -n {upper}" if lower else f"-n {upper}"
            raise LauncherError(
                f"{self.name}: n = {self.n} engines is not a multiple of engines_per_job = {per_job} "
                f"(every job starts {per_job}); use {fix}, or change engines_per_job"
            )
        if int(o.get("gpus_per_engine", 0)) and not self.supports_gpus:
            raise LauncherError(f"{self.name} has no GPU request in its job description: set gpus_per_engine = 0 "
                                "and ask for GPUs with extra_directives")
        if per_job > 1 and not self.supports_engines_per_job:
            raise LauncherError(f"{self.name} cannot start several engines per job: set engines_per_job = 1")

    supports_gpus: ClassVar[bool] = True
    supports_engines_per_job: ClassVar[bool] = True

    def layout(self) -> dict[str, Any]:
        o = self.options
        mode = self.mode
        ntasks = self.n if mode == "mpi" else 1
        # Never more slots per node than engines: -n 2 with engines_per_node = 4 asks for 2.
        per_node = min(int(o["engines_per_node"]), ntasks) if mode == "mpi" else 0
        nodes = int(o["nodes"]) or (ceil_div(ntasks, per_node) if per_node else 0)
        per_job = self.engines_per_job if self.role == "engines" else 1
        cpus = int(o["cpus_per_engine"])
        gpus = int(o.get("gpus_per_engine", 0)) if self.role == "engines" else 0
        return {
            "mode": mode,
            "array": mode == "array",
            "array_size": self.job_count if mode == "array" else 0,
            "array_limit": int(o.get("array_limit", 0)) if mode == "array" else 0,
            "array_throttle": f"%{o['array_limit']}" if mode == "array" and int(o.get("array_limit", 0)) else "",
            "mpi": mode == "mpi",
            "ntasks": ntasks,
            "nodes": nodes,
            "tasks_per_node": per_node,
            "cpus_per_engine": cpus,
            "engines_per_job": per_job,
            # What one job (or array task) asks for; in mpi mode per task, as before.
            "job_cpus": cpus * per_job,
            "gpus_per_engine": gpus,
            "job_gpus": gpus * per_job,
            "copies": self.job_count if mode == "jobs" else 1,
        }

    # ----- rendering ------------------------------------------------------------------
    def template_name(self) -> str:
        return f"{self.name}/{self.role}{self.template_suffix}"

    def output_paths(self, log_path: str, array: bool) -> tuple[str, str]:
        """stdout and stderr paths; stderr "" means merged into stdout."""
        o = self.options
        if o["output"]:
            return o["output"], o["error"]
        base = re.sub(r"\.log$", "", log_path.replace("{index}", "").rstrip("-."))
        pattern = self.array_output_pattern if array else self.output_pattern
        return f"{base}-{pattern}.out", o["error"]

    def launch_line(self, command: list[str], layout: dict[str, Any]) -> str:
        """The line that runs the command: itself, or under an MPI starter."""
        if not layout["mpi"]:
            return shjoin(command)
        starter = [self.options["mpiexec"], "-n", str(layout["ntasks"]), *self.options["mpi_args"]]
        return shjoin([*starter, *command])

    def via_node_forwarders(self, command: list[str], env: dict[str, str]) -> tuple[list[str], str]:
        """The engine command pointed at its node's forwarder, and the line starting the forwarders.

        Each forwarder is named after its host (the default name); the engine finds the file
        of the one on its own host itself, since only it knows where it runs.
        """
        from ..connection import CONNECTION_ENV

        if self.profile_dir is None:
            raise LauncherError(f"{self.name}: forwarder_per_node = true needs a profile directory: "
                                "the forwarders write their connection files there")
        where = ["--profile-dir", str(self.profile_dir.path), "--cluster-id", self.cluster_id]
        forwarder = [command[0], "-m", "hpcpar", "forwarder", *where]
        if CONNECTION_ENV in env:
            forwarder.append("--from-env")
        return [*command, "--via-local-forwarder", *where], self.forwarder_line(forwarder)

    def forwarder_line(self, forwarder: list[str]) -> str:
        """The line that starts ``forwarder`` once on every node of the job; per system."""
        raise LauncherError(f"{self.name} cannot start one forwarder per node")

    def system_context(self, ctx: dict[str, Any]) -> dict[str, Any]:
        """System-specific values (formatted walltime, memory ...); override per system."""
        return {}

    def context(self, command: list[str], env: dict[str, str], log_path: str) -> dict[str, Any]:
        o = self.options
        command = list(command)
        if o.get("engine_python") and command and command[0] == sys.executable:
            command[0] = o["engine_python"]
        for name in env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise LauncherError(f"environment variable name {name!r} is not valid in a job script")
        layout = self.layout()
        output, error = self.output_paths(log_path, layout["array"])
        forwarder = ""
        if self.role == "engines" and o.get("forwarder_per_node"):
            command, forwarder = self.via_node_forwarders(command, env)
        ctx: dict[str, Any] = {
            **layout,
            "role": self.role,
            "n": self.n,
            "system": self.name,
            "cluster_id": self.cluster_id,
            "profile_dir": str(self.profile_dir.path) if self.profile_dir else "",
            "job_name": sanitize_job_name(f"{o['job_name']}-{self.role}"),
            "queue": o["queue"],
            "account": o["account"],
            "walltime_seconds": parse_walltime(o["walltime"]) if o["walltime"] else 0,
            "drain": int(o.get("drain", 0)),
            "memory_bytes": parse_memory(o["memory"]) if o["memory"] else 0,
            "output": output,
            "error": error,
            "shell": o["shell"],
            "prefix": self.prefix,
            "extra_directives": [strip_prefix(d, self.prefix) for d in o["extra_directives"]],
            "skip_directives": list(o["skip_directives"]),
            "prologue": list(o["prologue"]),
            "epilogue": list(o["epilogue"]),
            "env": dict(env),
            "command": shjoin(command),
            "launch": self.launch_line(command, layout),
            "forwarder": forwarder,
            "array_index_var": self.array_index_var,
            "options": o,
        }
        ctx.update(self.system_context(ctx))
        return ctx

    def render(self, command: list[str], env: dict[str, str], log_path: str) -> RenderedJob:
        """Every file this launcher would submit, without submitting anything."""
        self.check()
        ctx = self.context(command, env, log_path)
        search = template_search_path(self.profile_dir)
        script = render_template(self.template_name(), ctx, search)
        name = self.file_stem() + self.template_suffix[: -len(".j2")]
        return RenderedJob(self.name, self.role, {name: script}, name, ctx["copies"])
