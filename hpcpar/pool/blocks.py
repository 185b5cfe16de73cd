"""The pool's hands: submit one job of ``engines_per_job`` engines, poll the pool's jobs,
cancel one, all through the configured batch launcher (no scheduler-specific code here).

With ``mode = "mpi"`` each job is one MPI engine set of ``engines_per_job`` ranks sharing
its own COMM_WORLD (a replacement is a whole new set); each set's ranks ask for engine ids
``base + rank`` from a base no earlier set used, so a set's ids are new and contiguous.

Every job goes into the job ledger the moment the scheduler answers (the launcher does
that), so ``hpcpar stop`` cancels pool jobs like any other, from any shell.
"""

from __future__ import annotations

import time
from typing import Any

from ..config import Config, ConfigError
from ..launchers.base import LauncherError, get_launcher_class
from ..launchers.batch import BatchLauncher, JobState, PollError
from ..launchers.build import batch_engine_env, engine_command, make_launcher
from ..launchers.ledger import forget_jobs
from ..paths import ProfileDir
from .state import Block


class BlockLauncher:
    """Submits, polls and cancels the pool's jobs for one cluster."""

    def __init__(self, pd: ProfileDir, cluster_id: str, config: Config) -> None:
        self.pd = pd
        self.cluster_id = cluster_id
        self.config = config
        self.system = str(config["cluster.engines"])
        # As the engine jobs see it: [batch] < [<system>] < [batch.engines].
        options = config.launcher_options(self.system, "engines")
        self.per_job = max(1, int(options.get("engines_per_job", 1)))
        self.mpi = options.get("mode") == "mpi"
        self.poller = self._launcher(self.per_job)

    def _launcher(self, n: int) -> BatchLauncher:
        if self.mpi:
            return self._mpi_launcher(n)
        launcher = make_launcher(self.system, "engines", n, config=self.config, profile_dir=self.pd,
                                 cluster_id=self.cluster_id)
        if not isinstance(launcher, BatchLauncher):
            raise ConfigError([f"an elastic pool needs batch engines (slurm, sge, pbs ...), not {self.system!r}"])
        launcher.options["mode"] = "jobs"  # one job per block, whatever the cluster's layout
        return launcher

    def _mpi_launcher(self, ranks: int) -> BatchLauncher:
        """One MPI job of ``ranks`` engines: engines_per_job is the set's size here."""
        cls = get_launcher_class(self.system)
        if not issubclass(cls, BatchLauncher):
            raise ConfigError([f"an elastic pool needs batch engines (slurm, sge, pbs ...), not {self.system!r}"])
        options = {**self.config.launcher_options(self.system, "engines"), "engines_per_job": 1}
        launcher = cls(role="engines", n=ranks, profile_dir=self.pd, cluster_id=self.cluster_id, options=options)
        launcher.check()
        return launcher

    def submit(self, mpi_id_base: int = 0) -> Block:
        """One more job of ``engines_per_job`` engines (with MPI: ranks asking for ids from
        ``mpi_id_base``); returns its block."""
        launcher = self._launcher(self.per_job)
        env = batch_engine_env(self.config, self.pd, self.cluster_id)
        if self.mpi:
            env["HPCPAR_MPI_ID_BASE"] = str(mpi_id_base)
        command = engine_command(self.config, self.pd, self.cluster_id, mpi=self.mpi, profile_files=False)
        log_path = self.pd.log_file("engine-pool-{index}", self.cluster_id)
        launcher.start(command, env, str(log_path))
        return Block(job_id=launcher.job_ids[-1], system=self.system, engines=self.per_job, submitted=time.time())

    def poll(self, job_ids: list[str]) -> dict[str, JobState]:
        """One status call; jobs it does not mention have left the queue ("done")."""
        if not job_ids:
            return {}
        try:
            found = self.poller.query(job_ids)
        except (LauncherError, PollError) as e:
            return {j: JobState("unknown", "", str(e)) for j in job_ids}
        return {j: found.get(j, JobState("done", "", "no longer in the queue")) for j in job_ids}

    def cancel(self, job_id: str) -> None:
        self.poller.cancel([job_id])
        forget_jobs(self.pd, self.cluster_id, {job_id})

    def walltime_seconds(self) -> float:
        from ..config.units import parse_walltime

        value = self.poller.options.get("walltime") or ""
        return float(parse_walltime(value)) if value else 0.0


def describe_block(block: Block, now: float) -> dict[str, Any]:
    left = None if block.ends is None else round(block.ends - now)
    return {"job_id": block.job_id, "state": block.state, "engines": block.engines, "seconds_left": left,
            "started": block.started, "start_from": block.start_from, "removing": block.removing}
