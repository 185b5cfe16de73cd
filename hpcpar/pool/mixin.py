"""``Cluster.scale`` / ``adapt`` / ``stop_adapt`` (dask-jobqueue's vocabulary).

They change the pool state and make sure its manager process runs; they return at once,
and the pool keeps working after this process exits (``hpcpar stop`` ends it).
"""

from __future__ import annotations

from typing import Any

from . import control


class PoolMixin:
    profile_dir: Any
    cluster_id: str
    config: Any
    # True when an elastic pool submits the engines: the cluster itself starts none.
    pool_managed: bool = False

    def scale(self, n: int) -> None:
        """Keep ``n`` engines, in whole batch jobs of ``engines_per_job`` (adaptive scaling off)."""
        control.scale(self.profile_dir, self.cluster_id, n, self.config)

    def adapt(self, minimum: int = 0, maximum: int | None = None, interval: float | None = None,
              wait_count: int | None = None) -> None:
        """Grow under a backlog of load-balanced tasks, shrink when engines idle, between
        ``minimum`` and ``maximum`` engines (default maximum: [pool] max)."""
        control.adapt(self.profile_dir, self.cluster_id, minimum, maximum, interval, wait_count, self.config)

    def stop_adapt(self) -> None:
        """Adaptive scaling off; the pool keeps its current size and keeps replacing jobs."""
        control.stop_adapt(self.profile_dir, self.cluster_id)

    def _stop_pool(self) -> None:
        """First step of stopping the cluster: the manager goes, so it submits nothing more
        (the pool's jobs are in the job ledger, which the stop cancels)."""
        control.stop_manager(self.profile_dir, self.cluster_id)

    def pool_status(self) -> dict[str, Any] | None:
        """The pool as ``hpcpar status`` shows it (None without a pool)."""
        return control.describe(self.profile_dir, self.cluster_id)
