"""Engine sets: starting them (with their forwarders), waiting for their engines to
register, adding and stopping them. Each set is one launcher (local processes, an MPI
job, a batch job or array)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..launchers import Launcher, LauncherError
from ..paths import ProfileDir
from .helpers import (
    FINAL_STATES,
    ClusterError,
    is_batch_launcher,
    job_output,
    layout,
    python_cmd,
    tail,
)


class EngineSetsMixin:
    """Cluster methods that start, watch and stop engine sets and forwarders."""

    profile_dir: ProfileDir
    cluster_id: str
    n: int
    state: Any
    engine_launcher: str
    engine_sets: list[Launcher]
    forwarder_sets: list[Launcher]
    engine_args: list[str]
    env: dict[str, str]
    config: Any

    def start_forwarders(self, k: int, timeout: float = 30.0) -> list[Path]:
        """Start ``k`` local forwarders (``hpcpar forwarder``); return their engine connection files."""
        from ..commands.forwarder import forwarder_file
        from ..launchers.local import LocalLauncher

        files = []
        for i in range(k):
            name = f"f{i}"
            path = forwarder_file(self.profile_dir, self.cluster_id, name)
            path.unlink(missing_ok=True)
            launcher = LocalLauncher(role="forwarders", n=1)
            self.forwarder_sets.append(launcher)
            command = python_cmd("forwarder", "--profile-dir", str(self.profile_dir.path),
                                 "--cluster-id", self.cluster_id, "--name", name,
                                 "--controller-timeout", f"{self.config['engine.controller_timeout']:g}")
            try:
                launcher.start(command, self.env, str(self.profile_dir.log_file(f"forwarder-{name}", self.cluster_id)))
            finally:
                self._save()
            files.append(path)
        deadline = time.monotonic() + timeout
        for path, launcher in zip(files, self.forwarder_sets[-k:]):
            while not path.exists():
                if launcher.status() != "running" or time.monotonic() > deadline:
                    log_path = self.profile_dir.log_file(f"forwarder-{path.stem.rsplit('-', 1)[1]}", self.cluster_id)
                    raise ClusterError(f"a forwarder did not start (log {log_path}):\n{tail(log_path)}")
                time.sleep(0.05)
        return files

    def start_engines(self, n: int | None = None, connection_file: Path | None = None) -> Launcher:
        """Start one more engine set of ``n`` engines (default: the cluster's n); with
        ``connection_file`` (a forwarder's), they connect through that forwarder."""
        from ..launchers.build import engine_command, engine_env, make_launcher

        n = self.n if n is None else n
        if self.state is None:
            raise ClusterError("start the controller first")
        launcher = make_launcher(self.engine_launcher, "engines", n, config=self.config,
                                 profile_dir=self.profile_dir, cluster_id=self.cluster_id)
        batch = is_batch_launcher(launcher)
        env = dict(self.env)
        if batch:
            engine_json = None
            if self.config["engine.connection"] == "env":
                try:
                    engine_json = self.profile_dir.engine_file(self.cluster_id).read_text()
                except OSError as e:
                    raise ClusterError(f"cannot read the engine connection file ({e}); is the controller up?") from None
            env.update(engine_env(self.config, engine_json))
        command = engine_command(self.config, self.profile_dir, self.cluster_id,
                                 mpi=bool(getattr(launcher, "mpi", False)), profile_files=not batch)
        index = len(self.engine_sets)
        log_path = self.profile_dir.log_file(f"engine-{index}-{{index}}", self.cluster_id)
        self.engine_sets.append(launcher)
        try:
            via = ["--file", str(connection_file)] if connection_file is not None else []
            launcher.start([*command, *via, *self.engine_args], env, str(log_path))
        finally:
            self._save()
        if batch:
            ids = ", ".join(launcher.job_ids)
            self._say(f"engines: {launcher.name} job {ids} submitted ({layout(launcher)}), recorded in "
                      f"{self.profile_dir.run}")
        return launcher

    def expected_engines(self) -> int:
        return sum(int(getattr(s, "n", 0) or 0) for s in self.engine_sets) or self.n

    def wait_for_engines(
        self, n: int | None = None, timeout: float | None = 60.0, interactive: bool | None = None
    ):
        """Wait until ``n`` engines (default: all started) registered; return the Client.

        With a progress callback, reports "engines registered 37/128" and the queue state of
        the batch jobs as they change. Fails early when every engine set has ended. Time a
        batch job spends queued does not count against ``timeout`` (None: no limit).
        """
        from ..progress import Progress

        rc = self.connect_client()
        want = self.expected_engines() if n is None else n
        with Progress(total=want, desc="engines", unit="engine",
                      enabled=False if self.progress is not None else interactive) as bar:
            return self._wait_loop(rc, want, timeout, bar)

    def _wait_loop(self, rc: Any, want: int, timeout: float | None, bar: Any):
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        shown, shown_jobs, shown_at = None, None, 0.0
        last_have, forced_at = -1, 0.0
        while True:
            have = len(rc.ids)
            bar.update_to(min(have, want))
            if have != last_have and (time.monotonic() - forced_at >= 1.0 or have >= want):
                # Engines registering means jobs started: ask the scheduler now, not at back-off.
                for s in self.engine_sets:
                    if is_batch_launcher(s) and last_have >= 0:
                        s.poll(force=True)
                last_have, forced_at = have, time.monotonic()
            states = [(s, s.status()) for s in self.engine_sets]
            jobs = "; ".join(f"{s.name} job {', '.join(s.job_ids)}: {st}" for s, st in states if is_batch_launcher(s))
            line = f"engines registered {have}/{want}" + (f"; {jobs}" if jobs else "")
            now = time.monotonic()
            # A line when a job changes state, when all are in, else at most one a second.
            if line != shown and (jobs != shown_jobs or have >= want or now - shown_at >= 1.0):
                self._say(line)
                shown, shown_jobs, shown_at = line, jobs, now
            if have >= want:
                return rc
            if states and all(st in FINAL_STATES for _, st in states):
                time.sleep(0.5)  # a registration may still be on its way
                if len(rc.ids) >= want:
                    continue
                raise ClusterError(f"{have} of {want} engines registered, and every engine set has ended "
                                   f"({', '.join(s.describe() + ' ' + st for s, st in states)}):"
                                   f"{job_output(self.profile_dir, self.cluster_id, 'engine')}")
            if deadline is not None and any(st in ("pending", "held") for _, st in states):
                deadline = max(deadline, time.monotonic() + 1.0)  # time spent queued does not count
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"{have} of {want} engines registered after {timeout:g} s; check the engines' logs in "
                    f"{self.profile_dir.log} (or the batch job output){job_output(self.profile_dir, self.cluster_id, 'engine')}"
                )
            time.sleep(0.1)

    def add_engines(self, n: int, wait: bool = False, timeout: float | None = 60.0) -> Launcher:
        """Start ``n`` more engines for this (running) cluster; with ``wait``, until they registered."""
        if self.state is None:
            raise ClusterError("the cluster is not started")
        before = len(self.connect_client().ids) if wait else 0
        launcher = self.start_engines(n)
        self.n = self.expected_engines()
        self._save()
        if wait:
            self.wait_for_engines(before + n, timeout=timeout)
        return launcher

    def stop_engines(self) -> None:
        errors = []
        for s in self.engine_sets:
            try:
                s.stop()
            except LauncherError as e:
                errors.append(str(e))
        if errors:
            raise ClusterError("; ".join(errors))

    def _stop_forwarders(self) -> None:
        for s in self.forwarder_sets:
            s.stop()
