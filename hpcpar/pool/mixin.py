"""``Cluster.scale`` / ``adapt`` / ``stop_adapt`` (dask-jobqueue's vocabulary), with the
``_sync`` twins of hpcpar's (and ipyparallel's) Cluster convention.

Each changes the pool state and makes sure its manager process runs, then returns; the
pool keeps working after this process exits (``hpcpar stop`` ends it). The change is
small (a locked file write), so the plain names make it at once and return an awaitable:
``cluster.scale(4)`` works as in dask-jobqueue, ``await cluster.scale(4)`` as the plain
names of the Cluster API do, and errors (a size above ``max``) raise at the call either way.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from . import control


class Applied:
    """A pool change already made: awaiting it returns None at once."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())

    def __repr__(self) -> str:
        return f"<{self.what}: applied>"


class PoolMixin:
    profile_dir: Any
    cluster_id: str
    config: Any
    # True when an elastic pool submits the engines: the cluster itself starts none.
    pool_managed: bool = False

    def scale_sync(self, n: int) -> None:
        """Keep ``n`` engines, in whole batch jobs of ``engines_per_job`` (adaptive scaling off)."""
        control.scale(self.profile_dir, self.cluster_id, n, self.config)

    def adapt_sync(self, minimum: int = 0, maximum: int | None = None, interval: float | None = None,
                   wait_count: int | None = None) -> None:
        """Grow under a backlog of load-balanced tasks, shrink when engines idle, between
        ``minimum`` and ``maximum`` engines (default maximum: [pool] max)."""
        control.adapt(self.profile_dir, self.cluster_id, minimum, maximum, interval, wait_count, self.config)

    def stop_adapt_sync(self) -> None:
        """Adaptive scaling off; the pool keeps its current size and keeps replacing jobs."""
        control.stop_adapt(self.profile_dir, self.cluster_id)

    def scale(self, n: int) -> Applied:
        """:meth:`scale_sync`, done at once; call it (dask) or await it (the Cluster API)."""
        self.scale_sync(n)
        return Applied(f"scale({n})")

    def adapt(self, minimum: int = 0, maximum: int | None = None, interval: float | None = None,
              wait_count: int | None = None) -> Applied:
        """:meth:`adapt_sync`, done at once; call it (dask) or await it (the Cluster API)."""
        self.adapt_sync(minimum, maximum, interval, wait_count)
        return Applied(f"adapt(minimum={minimum}, maximum={maximum})")

    def stop_adapt(self) -> Applied:
        """:meth:`stop_adapt_sync`, done at once; call it (dask) or await it (the Cluster API)."""
        self.stop_adapt_sync()
        return Applied("stop_adapt()")

    def _stop_pool(self) -> None:
        """First step of stopping the cluster: the manager goes, so it submits nothing more
        (the pool's jobs are in the job ledger, which the stop cancels)."""
        control.stop_manager(self.profile_dir, self.cluster_id)

    def pool_status(self) -> dict[str, Any] | None:
        """The pool as ``hpcpar status`` shows it (None without a pool)."""
        return control.describe(self.profile_dir, self.cluster_id)
