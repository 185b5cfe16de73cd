"""Cluster: start a controller and engines, remember them, stop them.

What was started is written to ``<profile>/run/cluster[-ID].json`` as soon as
it is known, so ``hpcpar stop`` works from any process, after any crash.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .connection import ConnectionInfo
from .launchers import Launcher, LauncherError, get_launcher_class
from .paths import ProfileDir


class ClusterError(RuntimeError):
    pass


def _python_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpcpar", *args]


@dataclass
class ClusterState:
    profile_dir: str
    cluster_id: str
    n: int
    created: float = field(default_factory=time.time)
    controller: dict[str, Any] | None = None
    engine_sets: list[dict[str, Any]] = field(default_factory=list)
    starter_pid: int = field(default_factory=os.getpid)

    def write(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=1))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> ClusterState:
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as e:
            raise ClusterError(
                f"cannot read cluster state {path} ({e}); remove it if no cluster is running"
            ) from None


def _launcher_from(entry: dict[str, Any]) -> Launcher:
    return get_launcher_class(entry["launcher"]).from_dict(entry["state"])


class Cluster:
    """A controller plus engine sets, started by launchers.

    ``with hpcpar.Cluster(n=4) as rc:`` starts a local cluster, waits for the
    engines and gives a connected Client; leaving the block stops everything.
    """

    def __init__(
        self,
        n: int | None = None,
        *,
        profile: str | None = None,
        profile_dir: str | os.PathLike | None = None,
        cluster_id: str = "",
        engines: str = "local",
        controller: str = "local",
        controller_args: list[str] | None = None,
        engine_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.n = n if n is not None else (os.cpu_count() or 1)
        self.profile_dir = ProfileDir(Path(profile_dir)) if profile_dir else ProfileDir.for_profile(profile)
        self.cluster_id = cluster_id
        self.engine_launcher = engines
        self.controller_launcher = controller
        self.controller_args = list(controller_args or [])
        self.engine_args = list(engine_args or [])
        self.env = dict(env or {})
        self.controller: Launcher | None = None
        self.engine_sets: list[Launcher] = []
        self.state: ClusterState | None = None
        self._client: Any = None

    @property
    def state_file(self) -> Path:
        return self.profile_dir.state_file(self.cluster_id)

    def _save(self) -> None:
        assert self.state is not None
        self.state.controller = (
            {"launcher": self.controller.name, "state": self.controller.to_dict()} if self.controller else None
        )
        self.state.engine_sets = [{"launcher": s.name, "state": s.to_dict()} for s in self.engine_sets]
        self.state.write(self.state_file)

    def _common_args(self) -> list[str]:
        return ["--profile-dir", str(self.profile_dir.path), "--cluster-id", self.cluster_id]

    def check_not_running(self) -> None:
        if not self.state_file.exists():
            return
        other = Cluster.from_file(self.state_file)
        if other.is_running():
            cid = f" --cluster-id {self.cluster_id}" if self.cluster_id else ""
            raise ClusterError(
                f"a cluster is already running in profile {self.profile_dir.name!r}{cid} "
                f"(state in {self.state_file}); stop it with 'hpcpar stop --profile {self.profile_dir.name}{cid}' "
                "or start another with --cluster-id NAME"
            )
        other.stop_cluster()  # leftovers of a crashed cluster

    def start_controller(self, timeout: float = 30.0) -> ConnectionInfo:
        self.profile_dir.create()
        self.check_not_running()
        for path in (self.profile_dir.client_file(self.cluster_id), self.profile_dir.engine_file(self.cluster_id)):
            path.unlink(missing_ok=True)
        self.state = ClusterState(str(self.profile_dir.path), self.cluster_id, self.n)
        launcher = get_launcher_class(self.controller_launcher)(role="controller", n=1)
        log_path = self.profile_dir.log_file("controller", self.cluster_id)
        self.controller = launcher
        launcher.start(_python_cmd("controller", *self._common_args(), *self.controller_args), self.env, str(log_path))
        self._save()
        client_file = self.profile_dir.client_file(self.cluster_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if client_file.exists():
                return ConnectionInfo.load(client_file)
            if launcher.status() != "running" and launcher.name == "local":
                break
            time.sleep(0.02)
        tail = _tail(log_path)
        self.stop_cluster()
        raise ClusterError(f"the controller did not start (log {log_path}):\n{tail}")

    def restart_controller(self, timeout: float = 30.0) -> ConnectionInfo:
        """Start a new controller for a running cluster whose controller died:
        same key and ports, same task database; the engines re-attach."""
        if self.is_running():
            raise ClusterError(f"the controller of {self.state_file} is running; nothing to restore")
        launcher = get_launcher_class(self.controller_launcher)(role="controller", n=1)
        log_path = self.profile_dir.log_file("controller", self.cluster_id)
        client_file = self.profile_dir.client_file(self.cluster_id)
        before = client_file.stat().st_mtime if client_file.exists() else 0.0
        self.controller = launcher
        launcher.start(_python_cmd("controller", *self._common_args(), "--restore", *self.controller_args),
                       self.env, str(log_path))
        self._save()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if client_file.exists() and client_file.stat().st_mtime != before:
                return ConnectionInfo.load(client_file)
            if launcher.status() != "running":
                break
            time.sleep(0.02)
        raise ClusterError(f"the restored controller did not start (log {log_path}):\n{_tail(log_path)}")

    def start_engines(self, n: int | None = None) -> Launcher:
        n = self.n if n is None else n
        if self.state is None:
            raise ClusterError("start the controller first")
        cls = get_launcher_class(self.engine_launcher)
        if hasattr(cls, "from_config"):  # launchers configured from the profile (mpi, batch)
            from .config import load_config

            launcher = cls.from_config("engines", n, load_config(profile_dir=self.profile_dir),
                                       profile_dir=self.profile_dir, cluster_id=self.cluster_id)
        else:
            launcher = cls(role="engines", n=n)
        index = len(self.engine_sets)
        log_path = self.profile_dir.log_file(f"engine-{index}-{{index}}", self.cluster_id)
        mpi = ["--mpi"] if getattr(launcher, "mpi", False) else []
        self.engine_sets.append(launcher)
        launcher.start(_python_cmd("engine", *self._common_args(), *mpi, *self.engine_args), self.env, str(log_path))
        self._save()
        return launcher

    def start_cluster(self, n: int | None = None) -> None:
        if n is not None:
            self.n = n
        self.start_controller()
        self.start_engines(self.n)

    def connect_client(self, timeout: float = 30.0):
        from .client import Client

        self._client = Client(self.profile_dir.client_file(self.cluster_id), timeout=timeout)
        return self._client

    def wait_for_engines(self, n: int | None = None, timeout: float = 60.0, interactive: bool | None = None):
        rc = self._client or self.connect_client()
        rc.wait_for_engines(self.n if n is None else n, timeout=timeout, interactive=interactive)
        return rc

    def start_and_connect(self, n: int | None = None, timeout: float = 60.0):
        self.start_cluster(n)
        return self.wait_for_engines(timeout=timeout, interactive=False)

    start_and_connect_sync = start_and_connect
    start_cluster_sync = start_cluster

    def add_engines(self, n: int) -> Launcher:
        return self.start_engines(n)

    def is_running(self) -> bool:
        return self.controller is not None and self.controller.status() in ("running", "pending")

    def stop_engines(self) -> None:
        errors = []
        for s in self.engine_sets:
            try:
                s.stop()
            except LauncherError as e:
                errors.append(str(e))
        if errors:
            raise ClusterError("; ".join(errors))

    def stop_cluster(self) -> None:
        """Stop engines, then the controller; remove the state file once nothing is left."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self.stop_engines()
        if self.controller is not None:
            self.controller.stop()
        self.state_file.unlink(missing_ok=True)

    stop_cluster_sync = stop_cluster

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Cluster:
        state = ClusterState.read(Path(path))
        self = cls(n=state.n, profile_dir=state.profile_dir, cluster_id=state.cluster_id)
        self.state = state
        if state.controller:
            self.controller = _launcher_from(state.controller)
        self.engine_sets = [_launcher_from(e) for e in state.engine_sets]
        return self

    def __enter__(self):
        return self.start_and_connect()

    def __exit__(self, *exc: Any) -> None:
        self.stop_cluster()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def running_clusters() -> list[tuple[Path, Cluster]]:
    from .paths import all_profiles

    found = []
    for pd in all_profiles():
        for path in sorted(pd.run.glob("cluster*.json")) if pd.run.is_dir() else []:
            try:
                found.append((path, Cluster.from_file(path)))
            except (ClusterError, LauncherError):
                continue
    return found
