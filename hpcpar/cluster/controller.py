"""Starting, waiting for, restoring and stopping a cluster's controller."""

from __future__ import annotations

import time
from typing import Any

from .. import sharedmem
from ..connection import ConnectionFileError, ConnectionInfo
from ..launchers import Launcher
from ..paths import ProfileDir
from .helpers import FINAL_STATES, ClusterError, is_batch_launcher, job_output, tail


class ControllerMixin:
    """Cluster methods that run the controller (one launcher: local process or batch job)."""

    profile_dir: ProfileDir
    cluster_id: str
    controller: Launcher | None
    controller_launcher: str
    controller_args: list[str]
    env: dict[str, str]
    config: Any

    def _controller_command(self, restore: bool = False) -> list[str]:
        from ..launchers.build import controller_command

        argv = controller_command(self.config, self.profile_dir, self.cluster_id)
        return [*argv, *(["--restore"] if restore else []), *self.controller_args]

    def _start_controller_launcher(self, restore: bool = False) -> Launcher:
        from ..launchers.build import make_launcher

        launcher = make_launcher(self.controller_launcher, "controller", 1, config=self.config,
                                 profile_dir=self.profile_dir, cluster_id=self.cluster_id)
        log_path = self.profile_dir.log_file("controller", self.cluster_id)
        self.controller = launcher
        try:
            launcher.start(self._controller_command(restore), self.env, str(log_path))
        finally:
            self._save()  # also a partial submit: stop must find it
        return launcher

    def _wait_for_connection_file(self, launcher: Launcher, timeout: float | None, since: float) -> ConnectionInfo:
        client_file = self.profile_dir.client_file(self.cluster_id)
        engine_file = self.profile_dir.engine_file(self.cluster_id)
        log_path = self.profile_dir.log_file("controller", self.cluster_id)
        batch = is_batch_launcher(launcher)
        if batch:
            self._say(f"controller: {launcher.name} job {', '.join(launcher.job_ids)} submitted; "
                      f"waiting for {client_file}")
        deadline = None if timeout is None else time.monotonic() + timeout
        last_state = ""
        while True:
            # Both files: the controller writes the client file, then the engine file, and batch
            # engines submitted next read the engine file at once (a local controller too).
            if _written_since(client_file, since) and _written_since(engine_file, since):
                try:
                    info = ConnectionInfo.load(client_file)
                except (OSError, ValueError):
                    info = None  # being written
                if info is not None:
                    self._say(f"controller up: {', '.join(info.urls)}")
                    return info
            state = launcher.status()
            if batch and state != last_state:
                self._say(f"controller job {', '.join(launcher.job_ids)}: {state}")
                if state == "running" and deadline is not None:
                    deadline = time.monotonic() + (timeout or 0)  # time spent queued does not count
                last_state = state
            if state in FINAL_STATES or (not batch and state != "running"):
                break
            if deadline is not None and time.monotonic() > deadline:
                where = f"{launcher.describe()} is {state}; " if batch else ""
                raise ClusterError(f"the controller wrote no connection file in {timeout:g} s ({where}log {log_path}):\n"
                                   f"{tail(log_path)}{job_output(self.profile_dir, self.cluster_id, 'controller')}")
            time.sleep(0.05 if not batch else 0.2)
        raise ClusterError(f"the controller did not start ({launcher.describe()} {launcher.status()}; "
                           f"log {log_path}):\n{tail(log_path)}{job_output(self.profile_dir, self.cluster_id, 'controller')}")

    def _restart_controller(self, timeout: float = 30.0) -> ConnectionInfo:
        """Start a new controller for a running cluster whose controller died:
        same key and ports, same task database; the engines re-attach."""
        if self.is_running():
            raise ClusterError(f"the controller of {self.state_file} is running; nothing to restore")
        client_file = self.profile_dir.client_file(self.cluster_id)
        before = client_file.stat().st_mtime if client_file.exists() else 0.0
        launcher = self._start_controller_launcher(restore=True)
        return self._wait_for_connection_file(launcher, timeout, since=before)

    def is_running(self) -> bool:
        """Whether the controller runs (or its batch job is queued)."""
        return self.controller is not None and self.controller.status() in ("running", "pending", "held")

    def _stop_controller(self) -> None:
        if self.controller is not None:
            shm_prefix = self._shm_prefix()
            self.controller.stop()
            if shm_prefix is not None:  # a controller killed hard leaves its clients' files behind
                sharedmem.remove_leftovers(shm_prefix)
            if is_batch_launcher(self.controller):  # a cancelled job may not get to remove them
                for path in (self.profile_dir.client_file(self.cluster_id),
                             self.profile_dir.engine_file(self.cluster_id)):
                    path.unlink(missing_ok=True)

    def _remove_connection_files(self) -> None:
        """After the whole cluster stopped: a controller killed hard leaves its connection files
        (and Curve keys), which list, status and Client() would take for a dead controller
        started by hand. A clean stop has removed them already; only for a controller this
        Cluster launched and stopped."""
        for path in (self.profile_dir.client_file(self.cluster_id), self.profile_dir.engine_file(self.cluster_id),
                     self.profile_dir.controller_key_file(self.cluster_id)):
            path.unlink(missing_ok=True)

    def _shm_prefix(self) -> str | None:
        """The name prefix of this cluster's shared-memory files (from the key in its connection file)."""
        try:
            info = ConnectionInfo.load(self.profile_dir.client_file(self.cluster_id))
        except (ConnectionFileError, OSError):
            return None
        return sharedmem.cluster_prefix(info.cluster_id, info.key_bytes)


def _written_since(path, since: float) -> bool:
    try:
        return path.stat().st_mtime > since
    except OSError:
        return False
