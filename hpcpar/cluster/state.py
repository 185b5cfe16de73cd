"""What a cluster persists: ``<profile>/run/cluster[-ID].json`` (written as soon as anything
is known, so ``hpcpar stop`` works from any process after any crash), the job ledger, and
rebuilding a Cluster from them."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..launchers import Launcher, LauncherError, get_launcher_class
from ..paths import ProfileDir
from .helpers import ClusterError

if TYPE_CHECKING:
    from .api import Cluster


@dataclass
class ClusterState:
    profile_dir: str
    cluster_id: str
    n: int
    created: float = field(default_factory=time.time)
    controller: dict[str, Any] | None = None
    engine_sets: list[dict[str, Any]] = field(default_factory=list)
    forwarders: list[dict[str, Any]] = field(default_factory=list)
    starter_pid: int = field(default_factory=os.getpid)
    engines_launcher: str = "local"
    controller_launcher: str = "local"
    # Settings given on the command line / to Cluster(): `hpcpar engines` reapplies them.
    overrides: dict[str, Any] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=1))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> ClusterState:
        try:
            data = json.loads(path.read_text())
            known = set(cls.__dataclass_fields__)
            return cls(**{k: v for k, v in data.items() if k in known})
        except (OSError, ValueError, TypeError) as e:
            raise ClusterError(
                f"cannot read cluster state {path} ({e}); remove it if no cluster is running"
            ) from None


def launcher_from(entry: dict[str, Any]) -> Launcher:
    return get_launcher_class(entry["launcher"]).from_dict(entry["state"])


class StateMixin:
    """Cluster methods that read and write the persisted state."""

    profile_dir: ProfileDir
    cluster_id: str
    state: ClusterState | None
    controller: Launcher | None
    engine_sets: list[Launcher]
    forwarder_sets: list[Launcher]
    n: int

    @property
    def state_file(self) -> Path:
        return self.profile_dir.state_file(self.cluster_id)

    def _save(self) -> None:
        assert self.state is not None
        self.state.controller = (
            {"launcher": self.controller.name, "state": self.controller.to_dict()} if self.controller else None
        )
        self.state.engine_sets = [{"launcher": s.name, "state": s.to_dict()} for s in self.engine_sets]
        self.state.forwarders = [{"launcher": s.name, "state": s.to_dict()} for s in self.forwarder_sets]
        self.state.n = self.n
        self.state.write(self.state_file)

    def check_not_running(self) -> None:
        """Refuse to start over a running cluster of the same id; clean up after a crashed one."""
        if not self.state_file.exists():
            self._cancel_ledger()  # jobs of a crashed start that never wrote its state
            return
        other = type(self).from_file(self.state_file)
        if other.is_running():
            cid = f" --cluster-id {self.cluster_id}" if self.cluster_id else ""
            raise ClusterError(
                f"a cluster is already running in profile {self.profile_dir.name!r}{cid} "
                f"(state in {self.state_file}); stop it with 'hpcpar stop --profile {self.profile_dir.name}{cid}' "
                "or start another with --cluster-id NAME"
            )
        other.stop_cluster()  # leftovers of a crashed cluster

    def job_states(self) -> list[dict[str, Any]]:
        """Every batch job of this cluster from the job ledger, with its queue state (one
        status call per system): ``{"job_id", "system", "role", "state", "native", "detail",
        "script", "submitted"}``. Works for a cluster whose starting process is gone."""
        from ..launchers.build import recorded_job_states

        rows = []
        for job_id, (record, state) in recorded_job_states(self.profile_dir, self.cluster_id).items():
            rows.append({"job_id": job_id, "system": record.system, "role": record.role, "state": state.state,
                         "native": state.native, "detail": state.detail, "script": record.script,
                         "submitted": record.submitted})
        return rows

    def _cancel_ledger(self) -> list[str]:
        from ..launchers.build import stop_recorded_jobs

        try:
            return stop_recorded_jobs(self.profile_dir, self.cluster_id)
        except LauncherError as e:
            raise ClusterError(str(e)) from None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Cluster:
        """The cluster a state file describes (what `hpcpar stop` / `status` / `engines` use).
        The config is loaded only when needed (adding engines), so an edited config never
        prevents stopping."""
        state = ClusterState.read(Path(path))
        self = cls.__new__(cls)
        self.profile_dir = ProfileDir(Path(state.profile_dir))
        self.overrides = dict(state.overrides)
        self._n_given = state.n
        self._override_source = "the cluster's start"
        self.controller_args, self.engine_args, self.env = [], [], {}
        self.progress = None
        self._client = None
        self._config = None
        self.cluster_id = state.cluster_id
        self.engine_launcher = state.engines_launcher
        self.controller_launcher = state.controller_launcher
        self.n = state.n
        self.state = state
        self.controller = launcher_from(state.controller) if state.controller else None
        self.engine_sets = [launcher_from(e) for e in state.engine_sets]
        self.forwarder_sets = [launcher_from(e) for e in state.forwarders]
        return self

    @classmethod
    def from_profile(cls, profile: str | None = None, cluster_id: str = "", *,
                     profile_dir: str | os.PathLike | None = None) -> Cluster:
        pd = ProfileDir(Path(profile_dir)) if profile_dir else ProfileDir.for_profile(profile)
        path = pd.state_file(cluster_id)
        if not path.exists():
            raise ClusterError(f"no cluster in profile {pd.name!r}" + (f" with cluster id {cluster_id!r}" if cluster_id else ""))
        return cls.from_file(path)


def running_clusters() -> list[tuple[Path, Cluster]]:
    """Every cluster with a state file, in every profile."""
    from ..paths import all_profiles
    from .api import Cluster

    found = []
    for pd in all_profiles():
        for path in sorted(pd.run.glob("cluster*.json")) if pd.run.is_dir() else []:
            try:
                found.append((path, Cluster.from_file(path)))
            except (ClusterError, LauncherError):
                continue
    return found
