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
from .helpers import ClusterError, jsonable

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
    engines: dict[str, Launcher]
    forwarder_sets: list[Launcher]
    n: int

    @property
    def state_file(self) -> Path:
        return self.profile_dir.state_file(self.cluster_id)

    @property
    def cluster_file(self) -> str:
        """The state file's path (ipyparallel's name for it)."""
        return str(self.state_file)

    def _save(self) -> None:
        assert self.state is not None
        self.state.controller = (
            {"launcher": self.controller.name, "state": self.controller.to_dict()} if self.controller else None
        )
        self.state.engine_sets = [{"id": set_id, "launcher": s.name, "state": s.to_dict()}
                                  for set_id, s in self.engines.items()]
        self.state.forwarders = [{"launcher": s.name, "state": s.to_dict()} for s in self.forwarder_sets]
        self.state.n = self.n
        self.state.write(self.state_file)

    def check_not_running(self) -> None:
        """Refuse to start over a running cluster of the same id; clean up after a crashed one."""
        if not self.state_file.exists():
            self._refuse_hand_started()
            self._cancel_ledger()  # jobs of a crashed start that never wrote its state
            return
        other = type(self).from_file(self.state_file)
        if other.is_running():
            cid = f" --cluster-id {self.cluster_id}" if self.cluster_id else ""
            raise ClusterError(
                f"a cluster is already running in profile {self.profile_dir.name!r}{cid} "
                f"(state in {self.state_file}); stop it with 'hpcpar stop --profile {self.profile_dir.name}{cid}' "
                "or start another with another cluster id (Cluster(cluster_id=NAME), --cluster-id NAME)"
            )
        live = [sid for sid, s in other.engines.items() if _alive(s)]
        if live and not getattr(self, "force_start", False):
            cid = f" --cluster-id {self.cluster_id}" if self.cluster_id else ""
            raise ClusterError(
                f"the controller of the cluster in profile {self.profile_dir.name!r}{cid} is gone, but its "
                f"engines still run (engine sets {', '.join(map(str, live))}): 'hpcpar start --profile "
                f"{self.profile_dir.name}{cid} --restore' brings a controller back to them with the task "
                "database; 'hpcpar start --force' stops them and starts afresh (their results are lost)"
            )
        other._stop_cluster()  # leftovers of a crashed cluster

    def _refuse_hand_started(self) -> None:
        """A live controller started by hand owns this profile and cluster id: starting another
        would overwrite its connection files and leave it running, out of every command's sight."""
        from ..commands.handstarted import find, selector, where

        hand = find(self.profile_dir, self.cluster_id)
        if hand is not None and hand.alive:
            raise ClusterError(
                f"a controller started by hand (pid {hand.pid}) runs in {where(self.profile_dir, self.cluster_id)}; "
                f"stop it with 'hpcpar stop {selector(self.profile_dir, self.cluster_id)}' or start another "
                "with another cluster id (Cluster(cluster_id=NAME), --cluster-id NAME)"
            )

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

    # -- rebuilding a Cluster ------------------------------------------------------------------

    @classmethod
    def from_file(cls, cluster_file: str | os.PathLike | None = None, *, profile: str | None = None,
                  profile_dir: str | os.PathLike | None = None, cluster_id: str = "") -> Cluster:
        """The cluster a state file describes (what `hpcpar stop` / `status` / `engines` use).

        Without ``cluster_file``: the one of ``profile`` / ``profile_dir`` (default: the
        default profile) and ``cluster_id`` (default: "", as ``hpcpar start`` without
        --cluster-id). The config is loaded only when needed (adding engines), so an edited
        config never prevents stopping.
        """
        if cluster_file is None:
            pd = ProfileDir(Path(profile_dir).expanduser()) if profile_dir else ProfileDir.for_profile(profile)
            cluster_file = pd.state_file(cluster_id)
            if not cluster_file.exists():
                raise ClusterError(f"no cluster in profile {pd.name!r}"
                                   + (f" with cluster id {cluster_id!r}" if cluster_id else "")
                                   + f" (no {cluster_file}); 'hpcpar list' shows running clusters")
        return cls._from_state(ClusterState.read(Path(cluster_file)))

    @classmethod
    def from_profile(cls, profile: str | None = None, cluster_id: str = "", *,
                     profile_dir: str | os.PathLike | None = None) -> Cluster:
        """``from_file(profile=..., cluster_id=...)``."""
        return cls.from_file(profile=profile, profile_dir=profile_dir, cluster_id=cluster_id)

    @classmethod
    def _from_state(cls, state: ClusterState) -> Cluster:
        self = cls.__new__(cls)
        self._init_fields(profile_dir=ProfileDir(Path(state.profile_dir)), overrides=dict(state.overrides),
                          n_given=state.n, override_source="the cluster's start", shutdown_atexit=False)
        self.cluster_id = state.cluster_id
        self.engine_launcher = state.engines_launcher
        self.controller_launcher = state.controller_launcher
        self.n = state.n
        self.state = state
        self.controller = launcher_from(state.controller) if state.controller else None
        self.engines = {str(e.get("id") or i): launcher_from(e) for i, e in enumerate(state.engine_sets)}
        self.forwarder_sets = [launcher_from(e) for e in state.forwarders]
        return self

    def to_dict(self) -> dict[str, Any]:
        """The cluster as JSON-safe data, laid out as ipyparallel's: ``{"cluster": {...},
        "controller": {"class", "state"}, "engines": {"class", "sets": {id: ...}}}``;
        :meth:`from_dict` rebuilds a Cluster that can stop it, in any process."""
        info = {"class": f"{type(self).__module__}.{type(self).__name__}", "cluster_id": self.cluster_id,
                "profile_dir": str(self.profile_dir.path), "n": self.n,
                "created": self.state.created if self.state else None,
                "starter_pid": self.state.starter_pid if self.state else None,
                "overrides": jsonable(self.overrides)}
        d: dict[str, Any] = {"cluster": info}
        if self.controller is not None:
            d["controller"] = {"class": self.controller_launcher, "state": self.controller.to_dict()}
        d["engines"] = {"class": self.engine_launcher,
                        "sets": {set_id: {"class": s.name, "state": s.to_dict()} for set_id, s in self.engines.items()}}
        if self.forwarder_sets:
            d["forwarders"] = [{"class": s.name, "state": s.to_dict()} for s in self.forwarder_sets]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cluster:
        """The Cluster :meth:`to_dict` described."""
        try:
            info = d["cluster"]
            engines = d.get("engines") or {}
            controller = d.get("controller")
            state = ClusterState(
                profile_dir=info["profile_dir"], cluster_id=info.get("cluster_id", ""), n=int(info.get("n") or 0),
                created=info.get("created") or time.time(), starter_pid=info.get("starter_pid") or os.getpid(),
                controller={"launcher": controller["class"], "state": controller["state"]} if controller else None,
                engine_sets=[{"id": set_id, "launcher": s["class"], "state": s["state"]}
                             for set_id, s in (engines.get("sets") or {}).items()],
                forwarders=[{"launcher": s["class"], "state": s["state"]} for s in d.get("forwarders", [])],
                engines_launcher=engines.get("class", "local"),
                controller_launcher=controller["class"] if controller else "local",
                overrides=dict(info.get("overrides") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ClusterError(f"not a cluster description ({type(e).__name__}: {e}); "
                               "from_dict takes what Cluster.to_dict() returned") from None
        return cls._from_state(state)


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


def _alive(launcher: Any) -> bool:
    """An engine set whose processes run or whose jobs are queued."""
    try:
        return launcher.status() in ("running", "pending", "held")
    except Exception:  # a launcher that cannot tell: do not block a start on it
        return False
