"""Cluster: start a controller and engines, remember them, stop them.

Everything comes from the layered configuration (built-in defaults < site < profile <
environment < arguments): which launcher runs the controller and the engines, the
controller's address, ports and heartbeat, the engines' timeouts, the batch options.
An invalid configuration raises :class:`~hpcpar.config.ConfigError` before anything starts.

What was started is written to ``<profile>/run/cluster[-ID].json`` as soon as it is known,
and every batch job id to the job ledger ``<profile>/run/jobs[-ID].json`` the moment the
scheduler answers, so ``hpcpar stop`` works from any process, after any crash.

Sync methods (``start_cluster``, ``stop_cluster``, ``start_and_connect`` ...) block; each
has an ``_async`` coroutine twin, and the ipyparallel-style ``_sync`` names are aliases::

    with hpcpar.Cluster(n=4) as rc: ...
    async with hpcpar.Cluster(n=4) as rc: ...
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import sharedmem
from .connection import ConnectionFileError, ConnectionInfo
from .launchers import Launcher, LauncherError, get_launcher_class
from .paths import ProfileDir

FINAL_STATES = ("done", "failed", "cancelled")


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


def _launcher_from(entry: dict[str, Any]) -> Launcher:
    return get_launcher_class(entry["launcher"]).from_dict(entry["state"])


def _is_batch(launcher: Any) -> bool:
    from .launchers.batch import BatchLauncher

    return isinstance(launcher, BatchLauncher)


class Cluster:
    """A controller plus engine sets, started by launchers configured from the profile.

    ``Cluster(profile="pbs", n=128, engines="pbs", queue="short", walltime="1:00:00")``:
    any config key can be given by its dotted name (``**{"batch.memory": "4G"}``) or a
    unique bare name (``queue``, ``walltime``, ``ip``, ``controller_timeout`` ...).
    ``controller_args`` / ``engine_args`` are extra command-line flags appended last.
    ``progress`` is called with one line of text at each step (``hpcpar start`` prints them).
    """

    def __init__(
        self,
        n: int | None = None,
        *,
        profile: str | None = None,
        profile_dir: str | os.PathLike | None = None,
        cluster_id: str = "",
        engines: str | None = None,
        controller: str | None = None,
        controller_args: list[str] | None = None,
        engine_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
        config: Any = None,
        override_source: str = "Cluster() arguments",
        **overrides: Any,
    ) -> None:
        self.profile_dir = ProfileDir(Path(profile_dir).expanduser()) if profile_dir else ProfileDir.for_profile(profile)
        self.overrides: dict[str, Any] = {
            k: v for k, v in {"cluster.engines": engines, "cluster.controller": controller, **overrides}.items()
            if v is not None
        }
        self._n_given = n
        self._override_source = override_source
        self.controller_args = list(controller_args or [])
        self.engine_args = list(engine_args or [])
        self.env = dict(env or {})
        self.progress = progress
        self.controller: Launcher | None = None
        self.engine_sets: list[Launcher] = []
        self.forwarder_sets: list[Launcher] = []  # one local launcher per forwarder (cluster.forwarders)
        self.state: ClusterState | None = None
        self._client: Any = None
        self._config = config
        if config is None:
            self._config = self._load_config()  # ConfigError now: nothing has started
        self.cluster_id = cluster_id or self._config["cluster.cluster_id"]
        self.engine_launcher: str = self._config["cluster.engines"]
        self.controller_launcher: str = self._config["cluster.controller"]
        self.n = self._resolve_n(n)

    # -- configuration ------------------------------------------------------------------------

    def _load_config(self):
        from .config import load_config

        return load_config(profile_dir=self.profile_dir, overrides=self.overrides,
                           override_source=getattr(self, "_override_source", "command line"))

    @property
    def config(self):
        if self._config is None:
            self._config = self._load_config()
        return self._config

    def _resolve_n(self, n: int | None) -> int:
        if n is not None:
            if n < 0:
                from .config import ConfigError

                raise ConfigError([f"n must be zero or more engines, not {n}"])
            return n
        configured = int(self.config["cluster.n"])
        if configured > 0:
            return configured
        from .launchers.build import is_batch

        if is_batch(self.engine_launcher):
            return 0  # start() refuses: a batch cluster needs an explicit size
        return os.cpu_count() or 1

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

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
        if not self.state_file.exists():
            self._cancel_ledger()  # jobs of a crashed start that never wrote its state
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

    def check(self) -> None:
        """Everything that can be checked before anything starts: the config, the network,
        the launchers' options. Raises ConfigError / LauncherError / ClusterError."""
        from .launchers.build import check_network, is_batch, make_launcher

        if self.config["cluster.forwarders"] and self.engine_launcher != "local":
            from .config import ConfigError

            raise ConfigError([
                f"cluster.forwarders = {self.config['cluster.forwarders']} needs local engines, not "
                f"{self.engine_launcher!r}: for SLURM engines set forwarder_per_node = true in [slurm] "
                "(with mode = \"mpi\"), or run 'hpcpar forwarder' on each node in your job script "
                "(docs/site-admin.md)"
            ])
        check_network(self.config)
        if self.n == 0 and self._n_given is None and is_batch(self.engine_launcher):
            from .config import ConfigError

            raise ConfigError([
                f"how many engines? {self.engine_launcher!r} engines need a count: pass -n N "
                "(or n= to Cluster), or set n in [cluster] of the profile's config.toml"
            ])
        make_launcher(self.controller_launcher, "controller", 1, config=self.config)
        if self.n:
            make_launcher(self.engine_launcher, "engines", self.n, config=self.config)

    # -- starting -------------------------------------------------------------------------------

    def _controller_command(self, restore: bool = False) -> list[str]:
        from .launchers.build import controller_command

        argv = controller_command(self.config, self.profile_dir, self.cluster_id)
        return [*argv, *(["--restore"] if restore else []), *self.controller_args]

    def _start_controller_launcher(self, restore: bool = False) -> Launcher:
        from .launchers.build import make_launcher

        launcher = make_launcher(self.controller_launcher, "controller", 1, config=self.config,
                                 profile_dir=self.profile_dir, cluster_id=self.cluster_id)
        log_path = self.profile_dir.log_file("controller", self.cluster_id)
        self.controller = launcher
        try:
            launcher.start(self._controller_command(restore), self.env, str(log_path))
        finally:
            self._save()  # also a partial submit: stop must find it
        return launcher

    def start_controller(self, timeout: float | None = 30.0) -> ConnectionInfo:
        """Start the controller and wait for its connection file.

        A batch controller writes the file into the profile's security/ directory (on a
        filesystem shared with the compute nodes); ``timeout`` then counts from the moment
        its job runs, and None waits as long as the job is queued.
        """
        self.check()
        self.profile_dir.create()
        self.check_not_running()
        for path in (self.profile_dir.client_file(self.cluster_id), self.profile_dir.engine_file(self.cluster_id)):
            path.unlink(missing_ok=True)
        self.state = ClusterState(str(self.profile_dir.path), self.cluster_id, self.n,
                                  engines_launcher=self.engine_launcher,
                                  controller_launcher=self.controller_launcher,
                                  overrides=_jsonable(self.overrides))
        self.state.write(self.state_file)
        try:
            launcher = self._start_controller_launcher()
            return self._wait_for_connection_file(launcher, timeout, since=0.0)
        except BaseException:
            self._stop_quietly()
            raise

    def _stop_quietly(self) -> None:
        """Stop what was started after a failure, without hiding that failure."""
        try:
            self.stop_cluster()
        except Exception as e:  # noqa: BLE001 - the original error matters more
            print(f"hpcpar: while cleaning up: {e}", file=sys.stderr)

    def _wait_for_connection_file(self, launcher: Launcher, timeout: float | None, since: float) -> ConnectionInfo:
        client_file = self.profile_dir.client_file(self.cluster_id)
        engine_file = self.profile_dir.engine_file(self.cluster_id)
        log_path = self.profile_dir.log_file("controller", self.cluster_id)
        batch = _is_batch(launcher)
        if batch:
            self._say(f"controller: {launcher.name} job {', '.join(launcher.job_ids)} submitted; "
                      f"waiting for {client_file}")
        deadline = None if timeout is None else time.monotonic() + timeout
        last_state = ""
        while True:
            if client_file.exists() and client_file.stat().st_mtime > since and (not batch or engine_file.exists()):
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
                                   f"{_tail(log_path)}{self._job_output('controller')}")
            time.sleep(0.05 if not batch else 0.2)
        raise ClusterError(f"the controller did not start ({launcher.describe()} {launcher.status()}; "
                           f"log {log_path}):\n{_tail(log_path)}{self._job_output('controller')}")

    def restart_controller(self, timeout: float = 30.0) -> ConnectionInfo:
        """Start a new controller for a running cluster whose controller died:
        same key and ports, same task database; the engines re-attach."""
        if self.is_running():
            raise ClusterError(f"the controller of {self.state_file} is running; nothing to restore")
        client_file = self.profile_dir.client_file(self.cluster_id)
        before = client_file.stat().st_mtime if client_file.exists() else 0.0
        launcher = self._start_controller_launcher(restore=True)
        return self._wait_for_connection_file(launcher, timeout, since=before)

    def start_forwarders(self, k: int, timeout: float = 30.0) -> list[Path]:
        """Start ``k`` local forwarders (``hpcpar forwarder``); return their engine connection files."""
        from .commands.forwarder import forwarder_file
        from .launchers.local import LocalLauncher

        files = []
        for i in range(k):
            name = f"f{i}"
            path = forwarder_file(self.profile_dir, self.cluster_id, name)
            path.unlink(missing_ok=True)
            launcher = LocalLauncher(role="forwarders", n=1)
            self.forwarder_sets.append(launcher)
            command = _python_cmd("forwarder", "--profile-dir", str(self.profile_dir.path),
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
                    raise ClusterError(f"a forwarder did not start (log {log_path}):\n{_tail(log_path)}")
                time.sleep(0.05)
        return files

    def start_engines(self, n: int | None = None, connection_file: Path | None = None) -> Launcher:
        """Start one more engine set of ``n`` engines (default: the cluster's n); with
        ``connection_file`` (a forwarder's), they connect through that forwarder."""
        from .launchers.build import engine_command, engine_env, make_launcher

        n = self.n if n is None else n
        if self.state is None:
            raise ClusterError("start the controller first")
        launcher = make_launcher(self.engine_launcher, "engines", n, config=self.config,
                                 profile_dir=self.profile_dir, cluster_id=self.cluster_id)
        batch = _is_batch(launcher)
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
            self._say(f"engines: {launcher.name} job {ids} submitted ({_layout(launcher)}), recorded in "
                      f"{self.profile_dir.run}")
        return launcher

    def start_cluster(self, n: int | None = None) -> None:
        """Start the controller and the engines; return without waiting for the engines."""
        if n is not None:
            self.n = n
        self.start_controller(timeout=None if _is_batch_name(self.controller_launcher) else 30.0)
        if self.n:
            try:
                k = min(int(self.config["cluster.forwarders"]), self.n)
                if k:
                    files = self.start_forwarders(k)
                    self._say(f"forwarders: {k} started, {self.n} engines spread over them")
                    for i, path in enumerate(files):
                        self.start_engines(self.n // k + (1 if i < self.n % k else 0), connection_file=path)
                else:
                    self.start_engines(self.n)
            except BaseException:
                self._stop_quietly()  # the engines could not start: leave no controller behind
                raise

    def connect_client(self, timeout: float = 30.0):
        from .client import Client

        if self._client is not None:
            return self._client
        self._client = Client(self.profile_dir.client_file(self.cluster_id), timeout=timeout)
        return self._client

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

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
        from .progress import Progress

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
                    if _is_batch(s) and last_have >= 0:
                        s.poll(force=True)
                last_have, forced_at = have, time.monotonic()
            states = [(s, s.status()) for s in self.engine_sets]
            jobs = "; ".join(f"{s.name} job {', '.join(s.job_ids)}: {st}" for s, st in states if _is_batch(s))
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
                                   f"{self._job_output('engine')}")
            if deadline is not None and any(st in ("pending", "held") for _, st in states):
                deadline = max(deadline, time.monotonic() + 1.0)  # time spent queued does not count
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"{have} of {want} engines registered after {timeout:g} s; check the engines' logs in "
                    f"{self.profile_dir.log} (or the batch job output){self._job_output('engine')}"
                )
            time.sleep(0.1)

    def start_and_connect(self, n: int | None = None, timeout: float | None = 60.0):
        """Start the cluster, wait for every engine, return a connected Client."""
        self.start_cluster(n)
        try:
            return self.wait_for_engines(timeout=timeout, interactive=False)
        except BaseException:
            self._stop_quietly()
            raise

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

    # -- ipyparallel-style names and async twins ---------------------------------------------

    start_and_connect_sync = start_and_connect
    start_cluster_sync = start_cluster
    start_controller_sync = start_controller
    start_engines_sync = start_engines
    wait_for_engines_sync = wait_for_engines

    async def start_cluster_async(self, n: int | None = None) -> None:
        await asyncio.to_thread(self.start_cluster, n)

    async def start_controller_async(self, timeout: float | None = 30.0) -> ConnectionInfo:
        return await asyncio.to_thread(self.start_controller, timeout)

    async def start_engines_async(self, n: int | None = None) -> Launcher:
        return await asyncio.to_thread(self.start_engines, n)

    async def wait_for_engines_async(self, n: int | None = None, timeout: float | None = 60.0):
        return await asyncio.to_thread(self.wait_for_engines, n, timeout, False)

    async def start_and_connect_async(self, n: int | None = None, timeout: float | None = 60.0):
        return await asyncio.to_thread(self.start_and_connect, n, timeout)

    async def add_engines_async(self, n: int, wait: bool = False, timeout: float | None = 60.0) -> Launcher:
        return await asyncio.to_thread(self.add_engines, n, wait, timeout)

    async def stop_cluster_async(self) -> None:
        await asyncio.to_thread(self.stop_cluster)

    # -- state -----------------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self.controller is not None and self.controller.status() in ("running", "pending", "held")

    def job_states(self) -> list[dict[str, Any]]:
        """Every batch job of this cluster from the job ledger, with its queue state (one
        status call per system): ``{"job_id", "system", "role", "state", "native", "detail",
        "script", "submitted"}``. Works for a cluster whose starting process is gone."""
        from .launchers.build import recorded_job_states

        rows = []
        for job_id, (record, state) in recorded_job_states(self.profile_dir, self.cluster_id).items():
            rows.append({"job_id": job_id, "system": record.system, "role": record.role, "state": state.state,
                         "native": state.native, "detail": state.detail, "script": record.script,
                         "submitted": record.submitted})
        return rows

    def stop_engines(self) -> None:
        errors = []
        for s in self.engine_sets:
            try:
                s.stop()
            except LauncherError as e:
                errors.append(str(e))
        if errors:
            raise ClusterError("; ".join(errors))

    def _cancel_ledger(self) -> list[str]:
        from .launchers.build import stop_recorded_jobs

        try:
            return stop_recorded_jobs(self.profile_dir, self.cluster_id)
        except LauncherError as e:
            raise ClusterError(str(e)) from None

    def stop_cluster(self) -> None:
        """Stop engines, then the controller, then every job left in the job ledger; remove
        the state file once nothing is left."""
        self._close_client()
        errors = []
        for stop in (self.stop_engines, self._stop_forwarders, self._stop_controller, self._cancel_ledger):
            try:
                stop()
            except (ClusterError, LauncherError) as e:
                errors.append(str(e))
        if errors:
            raise ClusterError("; ".join(errors))
        self.state_file.unlink(missing_ok=True)

    def _stop_forwarders(self) -> None:
        for s in self.forwarder_sets:
            s.stop()

    def _stop_controller(self) -> None:
        if self.controller is not None:
            shm_prefix = self._shm_prefix()
            self.controller.stop()
            if shm_prefix is not None:  # a controller killed hard leaves its clients' files behind
                sharedmem.remove_leftovers(shm_prefix)
            if _is_batch(self.controller):  # a cancelled job may not get to remove them
                for path in (self.profile_dir.client_file(self.cluster_id),
                             self.profile_dir.engine_file(self.cluster_id)):
                    path.unlink(missing_ok=True)

    def _shm_prefix(self) -> str | None:
        """The name prefix of this cluster's shared-memory files (from the key in its connection file)."""
        try:
            info = ConnectionInfo.load(self.profile_dir.client_file(self.cluster_id))
        except (ConnectionFileError, OSError):
            return None
        return sharedmem.cluster_prefix(info.cluster_id, info.key_bytes)

    stop_cluster_sync = stop_cluster
    stop = stop_cluster

    def start(self, n: int | None = None) -> None:
        """Alias of :meth:`start_cluster`."""
        self.start_cluster(n)

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
        self.controller = _launcher_from(state.controller) if state.controller else None
        self.engine_sets = [_launcher_from(e) for e in state.engine_sets]
        self.forwarder_sets = [_launcher_from(e) for e in state.forwarders]
        return self

    @classmethod
    def from_profile(cls, profile: str | None = None, cluster_id: str = "", *,
                     profile_dir: str | os.PathLike | None = None) -> Cluster:
        pd = ProfileDir(Path(profile_dir)) if profile_dir else ProfileDir.for_profile(profile)
        path = pd.state_file(cluster_id)
        if not path.exists():
            raise ClusterError(f"no cluster in profile {pd.name!r}" + (f" with cluster id {cluster_id!r}" if cluster_id else ""))
        return cls.from_file(path)

    def __enter__(self):
        return self.start_and_connect()

    def __exit__(self, *exc: Any) -> None:
        self.stop_cluster()

    async def __aenter__(self):
        return await self.start_and_connect_async()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop_cluster_async()

    def __repr__(self) -> str:
        cid = f" cluster_id={self.cluster_id!r}" if self.cluster_id else ""
        return (f"<Cluster profile={self.profile_dir.name!r}{cid} n={self.n} engines={self.engine_launcher!r} "
                f"controller={self.controller_launcher!r}>")

    def _job_output(self, role: str) -> str:
        """The tail of the newest log or batch job output of ``role`` (controller or engine)."""
        outs = sorted((p for p in self.profile_dir.log.glob(f"{role}*") if self.cluster_id in p.name
                       and p.suffix in (".out", ".log")), key=lambda p: p.stat().st_mtime)
        if not outs:
            return ""
        return f"\n--- {outs[-1]}:\n{_tail(outs[-1])}"


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    try:
        json.dumps(values)
        return dict(values)
    except (TypeError, ValueError):
        return {k: v for k, v in values.items() if isinstance(v, (str, int, float, bool, list))}


def _is_batch_name(name: str) -> bool:
    from .launchers.build import is_batch

    return is_batch(name)


def _layout(launcher: Any) -> str:
    mode = getattr(launcher, "mode", "")
    n = launcher.n
    return {"array": f"array of {n} tasks", "mpi": f"one job of {n} MPI ranks",
            "jobs": f"{n} jobs", "single": "one engine"}.get(mode, f"{n} engines")


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
