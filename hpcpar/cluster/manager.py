"""ClusterManager: the clusters of several profiles, by key, as ipyparallel's.

A key is ``"<profile>:<cluster id>"``. ``load_clusters`` reads the state files of running
clusters (``<profile>/run/cluster[-ID].json``); ``new_cluster`` makes one (not started).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..launchers import LauncherError
from ..paths import ProfileDir, all_profiles
from .api import Cluster
from .helpers import ClusterError


def cluster_key(cluster: Cluster) -> str:
    return f"{cluster.profile_dir.name}:{cluster.cluster_id}"


class ClusterManager:
    """Clusters by key (``"profile:cluster_id"``), loaded from disk or created here."""

    def __init__(self) -> None:
        self.clusters: dict[str, Cluster] = {}

    def load_clusters(
        self,
        *,
        profile_dirs: list[str | os.PathLike] | None = None,
        profile_dir: str | os.PathLike | None = None,
        profiles: list[str] | None = None,
        profile: str | None = None,
        init_default_clusters: bool = False,
    ) -> dict[str, Cluster]:
        """Add the running clusters of the given profiles (default: every profile) and drop
        the ones that stopped; with ``init_default_clusters``, a stopped default cluster
        (cluster id "") for each profile that has none running. Returns ``self.clusters``."""
        for key, cluster in list(self.clusters.items()):
            if cluster.state is not None and not cluster.state_file.exists():
                del self.clusters[key]  # stopped since it was loaded
        if profile_dirs is not None:
            dirs = [ProfileDir(Path(p).expanduser()) for p in profile_dirs]
        elif profile_dir is not None:
            dirs = [ProfileDir(Path(profile_dir).expanduser())]
        elif profiles is not None or profile is not None:
            dirs = [ProfileDir.for_profile(name) for name in (profiles if profiles is not None else [profile])]
        else:
            dirs = all_profiles()
        loaded = {str(c.state_file) for c in self.clusters.values()}
        for pd in dirs:
            files = sorted(pd.run.glob("cluster*.json")) if pd.run.is_dir() else []
            for path in files:
                if str(path) in loaded:
                    continue
                try:
                    cluster = Cluster.from_file(path)
                except (ClusterError, LauncherError):
                    continue  # unreadable: 'hpcpar list' reports it
                self.clusters[cluster_key(cluster)] = cluster
            if init_default_clusters and not files:
                cluster = Cluster(profile_dir=pd.path, cluster_id="")
                self.clusters.setdefault(cluster_key(cluster), cluster)
        return self.clusters

    def list_clusters(self) -> list[str]:
        """The keys of the clusters this manager holds."""
        return list(self.clusters)

    def new_cluster(self, **kwargs: Any) -> tuple[str, Cluster]:
        """``Cluster(**kwargs)``, kept under its key; returns ``(key, cluster)``."""
        cluster = Cluster(**kwargs)
        key = cluster_key(cluster)
        if key in self.clusters:
            raise KeyError(f"cluster {key} exists already; give another cluster_id")
        self.clusters[key] = cluster
        return key, cluster

    def get_cluster(self, cluster_id: str) -> Cluster:
        """The cluster under key ``cluster_id`` (``"profile:cluster_id"``)."""
        return self.clusters[cluster_id]

    def remove_cluster(self, cluster_id: str) -> None:
        """Forget the cluster under that key (it is not stopped)."""
        del self.clusters[cluster_id]
