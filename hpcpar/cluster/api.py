"""The Cluster API: start a controller and engines, remember them, stop them.

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
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..connection import ConnectionInfo
from ..launchers import Launcher, LauncherError
from ..paths import ProfileDir
from .controller import ControllerMixin
from .engines import EngineSetsMixin
from .helpers import ClusterError, is_batch_name, jsonable
from .state import ClusterState, StateMixin


class Cluster(StateMixin, ControllerMixin, EngineSetsMixin):
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
        from ..config import load_config

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
                from ..config import ConfigError

                raise ConfigError([f"n must be zero or more engines, not {n}"])
            return n
        configured = int(self.config["cluster.n"])
        if configured > 0:
            return configured
        from ..launchers.build import is_batch

        if is_batch(self.engine_launcher):
            return 0  # start() refuses: a batch cluster needs an explicit size
        return os.cpu_count() or 1

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    def check(self) -> None:
        """Everything that can be checked before anything starts: the config, the network,
        the launchers' options. Raises ConfigError / LauncherError / ClusterError."""
        from ..launchers.build import check_network, is_batch, make_launcher

        if self.config["cluster.forwarders"] and self.engine_launcher != "local":
            from ..config import ConfigError

            raise ConfigError([
                f"cluster.forwarders = {self.config['cluster.forwarders']} needs local engines, not "
                f"{self.engine_launcher!r}: for SLURM engines set forwarder_per_node = true in [slurm] "
                "(with mode = \"mpi\"), or run 'hpcpar forwarder' on each node in your job script "
                "(docs/site-admin.md)"
            ])
        check_network(self.config)
        if self.n == 0 and self._n_given is None and is_batch(self.engine_launcher):
            from ..config import ConfigError

            raise ConfigError([
                f"how many engines? {self.engine_launcher!r} engines need a count: pass -n N "
                "(or n= to Cluster), or set n in [cluster] of the profile's config.toml"
            ])
        make_launcher(self.controller_launcher, "controller", 1, config=self.config)
        if self.n:
            make_launcher(self.engine_launcher, "engines", self.n, config=self.config)

    # -- starting -------------------------------------------------------------------------------

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
                                  overrides=jsonable(self.overrides))
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

    def start_cluster(self, n: int | None = None) -> None:
        """Start the controller and the engines; return without waiting for the engines."""
        if n is not None:
            self.n = n
        self.start_controller(timeout=None if is_batch_name(self.controller_launcher) else 30.0)
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
        from ..client import Client

        if self._client is not None:
            return self._client
        self._client = Client(self.profile_dir.client_file(self.cluster_id), timeout=timeout, cluster=self)
        return self._client

    def dashboard(self, port: int = 0, **kwargs: Any):
        """The cluster's live web dashboard, served from this process (see Client.dashboard)."""
        from ..dashboard import start_dashboard

        return start_dashboard(url_file=self.profile_dir.client_file(self.cluster_id), port=port, **kwargs)

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def start_and_connect(self, n: int | None = None, timeout: float | None = 60.0):
        """Start the cluster, wait for every engine, return a connected Client."""
        self.start_cluster(n)
        try:
            return self.wait_for_engines(timeout=timeout, interactive=False)
        except BaseException:
            self._stop_quietly()
            raise

    # -- ipyparallel-style names and async twins ---------------------------------------------

    start_and_connect_sync = start_and_connect
    start_cluster_sync = start_cluster
    start_controller_sync = start_controller
    start_engines_sync = EngineSetsMixin.start_engines
    wait_for_engines_sync = EngineSetsMixin.wait_for_engines

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

    # -- stopping --------------------------------------------------------------------------------

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

    stop_cluster_sync = stop_cluster
    stop = stop_cluster

    def start(self, n: int | None = None) -> None:
        """Alias of :meth:`start_cluster`."""
        self.start_cluster(n)

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
