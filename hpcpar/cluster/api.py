"""The Cluster API: start a controller and engines, connect a client, stop them.

Named as ipyparallel's: the plain names are coroutines and each has a blocking ``_sync``
twin::

    rc = await cluster.start_and_connect()       # in async code or a notebook cell
    rc = cluster.start_and_connect_sync()        # anywhere else
    with hpcpar.Cluster(n=4) as rc: ...
    async with hpcpar.Cluster(n=4) as rc: ...

Everything comes from the layered configuration (built-in defaults < site < profile <
environment < arguments); an invalid configuration raises
:class:`~hpcpar.config.ConfigError` before anything starts. What was started is written to
``<profile>/run/cluster[-ID].json`` as soon as it is known, and every batch job id to the
job ledger the moment the scheduler answers, so ``hpcpar stop`` works from any process.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import logging
import os
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError
from ..connection import ConnectionInfo
from ..launchers import Launcher, LauncherError
from ..paths import ProfileDir
from ..pool.mixin import PoolMixin
from .controller import ControllerMixin
from .engines import EngineSetsMixin
from .helpers import ClusterError, is_batch_name, jsonable, new_cluster_id
from .state import ClusterState, StateMixin

ENGINE_TIMEOUT: Any = object()  # start_and_connect's default: the cluster's engine_timeout
_to_stop_at_exit: weakref.WeakSet[Cluster] = weakref.WeakSet()
_atexit_registered = False


def _stop_clusters_at_exit() -> None:
    for cluster in list(_to_stop_at_exit):
        if cluster.shutdown_atexit and cluster.state is not None:
            print(f"hpcpar: stopping {cluster!r} at exit", file=sys.stderr)
            try:
                cluster._stop_cluster()
            except Exception as e:  # noqa: BLE001 - at exit, report and go on with the others
                print(f"hpcpar: could not stop {cluster!r}: {e}", file=sys.stderr)


def _launcher_name(name: Any, launcher_class: Any, what: str) -> str | None:
    """``engines="mpi"`` or ipyparallel's ``engine_launcher_class=`` (a name or a launcher class)."""
    if name is not None and launcher_class is not None:
        raise TypeError(f"give {what}= or {what.rstrip('s')}_launcher_class=, not both")
    value = name if name is not None else launcher_class
    if isinstance(value, type):
        value = getattr(value, "name", "") or value.__name__
    from .ippconfig import launcher_name

    return launcher_name(value)  # ipyparallel's names: "SlurmEngineSetLauncher", "MPI" ...


class Cluster(StateMixin, ControllerMixin, EngineSetsMixin, PoolMixin):
    """A controller plus engine sets, started by launchers configured from the profile.

    ``Cluster(profile="pbs", n=128, engines="pbs", queue="short", walltime="1:00:00")``:
    any config key can be given by its dotted name (``**{"batch.memory": "4G"}``) or a
    unique bare name (``queue``, ``walltime``, ``ip``, ``controller_timeout`` ...).
    ``controller_args`` / ``engine_args`` are extra command-line flags appended last.

    ``cluster_id``: by default a new one (``"<epoch>-<4 chars>"``), so several clusters
    share a profile; ``""`` is the profile's default cluster (``hpcpar start`` without
    --cluster-id). ``shutdown_atexit``: stop what this object started when Python exits.
    ``log_level``: of the ``hpcpar.cluster`` logger, which gets each progress line.
    ipyparallel's ``engine_timeout`` (start_and_connect's wait), ``delay``, ``controller_ip``,
    ``controller_location``, ``engine_launcher_class``, ``controller_launcher_class`` and
    ``send_engines_connection_env`` are accepted with their meaning.
    ``progress`` is also called with each line (``hpcpar start`` prints them).
    """

    def __init__(
        self,
        n: int | None = None,
        *,
        profile: str | None = None,
        profile_dir: str | os.PathLike | None = None,
        cluster_id: str | None = None,
        engines: str | None = None,
        controller: str | None = None,
        controller_args: list[str] | None = None,
        engine_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
        log_level: int | str | None = None,
        shutdown_atexit: bool = True,
        engine_timeout: float | None = 60.0,
        delay: float = 0.0,
        controller_ip: str | None = None,
        controller_location: str | None = None,
        engine_launcher_class: Any = None,
        controller_launcher_class: Any = None,
        send_engines_connection_env: bool | None = None,
        config: Any = None,
        override_source: str = "Cluster() arguments",
        **overrides: Any,
    ) -> None:
        ipp_sections = None
        if config is not None and not isinstance(config, Config):  # ipyparallel's traitlets config
            from .ippconfig import cluster_kwargs, sections

            ipp_sections = sections(config)
            given = {k: v for k, v in locals().items() if k in _DEFAULTS}
            from_config = cluster_kwargs(ipp_sections)
            if engines is not None:  # an explicit engines= wins over c.Cluster.engine_launcher_class
                from_config.pop("engine_launcher_class", None)
            if controller is not None:
                from_config.pop("controller_launcher_class", None)
            merged = {**given, **{k: v for k, v in from_config.items()
                                  if given[k] is _DEFAULTS[k] or given[k] == _DEFAULTS[k]}}
            (n, profile, profile_dir, cluster_id, controller_args, engine_args, log_level, shutdown_atexit,
             engine_timeout, delay, controller_ip, controller_location, engine_launcher_class,
             controller_launcher_class, send_engines_connection_env) = (merged[k] for k in _DEFAULTS)
            config = None
        engines = _launcher_name(engines, engine_launcher_class, "engines")
        controller = _launcher_name(controller, controller_launcher_class, "controller")
        connection = None if send_engines_connection_env is None else ("env" if send_engines_connection_env else "file")
        self._init_fields(
            profile_dir=ProfileDir(Path(profile_dir).expanduser()) if profile_dir else ProfileDir.for_profile(profile),
            overrides={k: v for k, v in {"cluster.engines": engines, "cluster.controller": controller,
                                         "controller.ip": controller_ip, "controller.location": controller_location,
                                         "engine.connection": connection, **overrides}.items() if v is not None},
            n_given=n, override_source=override_source, shutdown_atexit=shutdown_atexit,
            controller_args=controller_args, engine_args=engine_args, env=env, progress=progress,
        )
        self._config = config
        if ipp_sections is not None:
            self._apply_ipp_config(ipp_sections)
        if config is None:
            self._config = self._load_config()  # ConfigError now: nothing has started
        if cluster_id is None:
            cluster_id = self._config["cluster.cluster_id"] or new_cluster_id()
        self.cluster_id = cluster_id
        self.engine_launcher: str = self._config["cluster.engines"]
        self.controller_launcher: str = self._config["cluster.controller"]
        self.n = self._resolve_n(n)
        self.engine_timeout = engine_timeout
        self.delay = float(delay)
        if log_level is not None:
            self.log.setLevel(log_level if isinstance(log_level, int) else str(log_level).upper())

    def _init_fields(self, *, profile_dir: ProfileDir, overrides: dict[str, Any], n_given: int | None,
                     override_source: str, shutdown_atexit: bool, controller_args: list[str] | None = None,
                     engine_args: list[str] | None = None, env: dict[str, str] | None = None,
                     progress: Callable[[str], None] | None = None) -> None:
        """The attributes every Cluster has, whether made by __init__ or rebuilt from state."""
        self.profile_dir = profile_dir
        self.overrides: dict[str, Any] = overrides
        self._n_given = n_given
        self._override_source = override_source
        self.shutdown_atexit = shutdown_atexit
        self.controller_args = list(controller_args or [])
        self.engine_args = list(engine_args or [])
        self.env = dict(env or {})
        self.progress = progress
        self.controller: Launcher | None = None
        self.engines: dict[str, Launcher] = {}
        self.forwarder_sets: list[Launcher] = []  # one local launcher per forwarder (cluster.forwarders)
        self.state: ClusterState | None = None
        self._client: Any = None
        self._config = None
        self.engine_timeout: float | None = 60.0
        self.delay = 0.0

    # -- configuration ------------------------------------------------------------------------

    def _load_config(self):
        from ..config import load_config
        from .ippconfig import ClusterConfig

        loaded = load_config(profile_dir=self.profile_dir, overrides=self.overrides,
                             override_source=getattr(self, "_override_source", "command line"))
        return ClusterConfig.of(loaded, self)  # cluster.config.SlurmEngineSetLauncher.queue = ... works

    def _apply_ipp_config(self, sections: dict[str, dict[str, Any]]) -> None:
        """ipyparallel launcher traits -> config keys (explicit arguments win), env and args."""
        from .ippconfig import Translator

        base = self._load_config()
        settings = Translator(base, base["cluster.engines"], base["cluster.controller"]).translate(sections)
        self.overrides = {**settings.overrides, **self.overrides}
        self.env = {**settings.env, **self.env}
        self.engine_args += settings.engine_args
        self.controller_args += settings.controller_args
        self._ipp_traits = {cls: dict(traits) for cls, traits in sections.items()}

    def _set_ipp_trait(self, cls: str, trait: str, value: Any) -> None:
        """``cluster.config.<Class>.<trait> = value`` (ipyparallel's way), checked now."""
        from .ippconfig import Translator, cluster_kwargs

        if cls == "Cluster":
            name = next(iter(cluster_kwargs({"Cluster": {trait: value}})))
            if name not in ("n", "engine_timeout", "delay", "shutdown_atexit", "engine_args", "controller_args"):
                raise ConfigError([f"Cluster.{trait}: give it to Cluster({name}=...) when making the cluster"])
            setattr(self, name, list(value) if name.endswith("_args") else value)
            return
        settings = Translator(self.config, self.engine_launcher, self.controller_launcher).translate({cls: {trait: value}})
        saved = dict(self.overrides)
        self.overrides.update(settings.overrides)
        try:
            self._config = self._load_config()
        except ConfigError:
            self.overrides = saved
            raise
        self.env.update(settings.env)
        self.engine_args += settings.engine_args
        self.controller_args += settings.controller_args
        self.__dict__.setdefault("_ipp_traits", {}).setdefault(cls, {})[trait] = value

    @property
    def config(self):
        if self._config is None:
            self._config = self._load_config()
        return self._config

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"hpcpar.cluster.{self.cluster_id or 'default'}")

    def _resolve_n(self, n: int | None) -> int:
        """0 means no engines (a controller only) wherever n comes from; not given (-1 in
        the config) means one engine per CPU for local engines."""
        if n is not None:
            from ..config import ConfigError

            if isinstance(n, bool) or not isinstance(n, int):
                raise ConfigError([f"n must be a whole number of engines (e.g. n=4), not {type(n).__name__} {n!r}"])
            if n < 0:
                raise ConfigError([f"n must be zero or more engines, not {n}"])
            return n
        configured = int(self.config["cluster.n"])
        if configured >= 0:
            return configured
        from ..launchers.build import is_batch

        if is_batch(self.engine_launcher):
            return 0  # start refuses: a batch cluster needs an explicit size
        return os.cpu_count() or 1

    def _say(self, text: str) -> None:
        self.log.info(text)
        if self.progress is not None:
            self.progress(text)

    def check(self) -> None:
        """Everything that can be checked before anything starts: the config, the network,
        the launchers' options. Raises ConfigError / LauncherError / ClusterError."""
        from ..launchers.build import check_network, make_launcher

        if self.config["cluster.forwarders"] and self.engine_launcher != "local":
            from ..config import ConfigError

            raise ConfigError([
                f"cluster.forwarders = {self.config['cluster.forwarders']} needs local engines, not "
                f"{self.engine_launcher!r}: for SLURM engines set forwarder_per_node = true in [slurm] "
                "(with mode = \"mpi\"), or run 'hpcpar forwarder' on each node in your job script "
                "(docs/site-admin.md)"
            ])
        check_network(self.config)
        self._check_batch_count()
        make_launcher(self.controller_launcher, "controller", 1, config=self.config)
        if self.n:
            make_launcher(self.engine_launcher, "engines", self.n, config=self.config)

    def _check_batch_count(self) -> None:
        from ..launchers.build import is_batch

        if self.n == 0 and is_batch(self.engine_launcher) and not self.pool_managed:
            from ..config import ConfigError

            given = "n=0 was given" if self._n_given == 0 else (
                "n = 0 in the configuration" if int(self.config["cluster.n"]) == 0 else "no count was given")
            raise ConfigError([
                f"how many engines? {self.engine_launcher!r} engines need a count of 1 or more ({given}): "
                "pass -n N (or n= to Cluster), or set n in [cluster] of the profile's config.toml; "
                "for a controller alone use local engines with -n 0"
            ])

    # -- the blocking implementations ---------------------------------------------------------

    def _start_controller(self, timeout: float | None = 30.0) -> ConnectionInfo:
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
        if self.shutdown_atexit:
            global _atexit_registered
            _to_stop_at_exit.add(self)
            if not _atexit_registered:
                atexit.register(_stop_clusters_at_exit)
                _atexit_registered = True
        try:
            launcher = self._start_controller_launcher()
            return self._wait_for_connection_file(launcher, timeout, since=0.0)
        except BaseException:
            self._stop_quietly()
            raise

    def _stop_quietly(self) -> None:
        """Stop what was started after a failure, without hiding that failure."""
        try:
            self._stop_cluster()
        except Exception as e:  # noqa: BLE001 - the original error matters more
            print(f"hpcpar: while cleaning up: {e}", file=sys.stderr)

    def _start_cluster(self, n: int | None = None) -> Cluster:
        if n is not None:
            self.n = self._resolve_n(n)
        self._check_batch_count()
        if self.controller is None:
            self._start_controller(timeout=None if is_batch_name(self.controller_launcher) else 30.0)
        if self.n and self.delay > 0:
            time.sleep(self.delay)  # ipyparallel's delay; hpcpar needs none: the controller is up here
        if self.n:
            try:
                k = min(int(self.config["cluster.forwarders"]), self.n)
                if k:
                    files = self._start_forwarders(k)
                    self._say(f"forwarders: {k} started, {self.n} engines spread over them")
                    for i, path in enumerate(files):
                        self._start_engines(self.n // k + (1 if i < self.n % k else 0), connection_file=path)
                else:
                    self._start_engines(self.n)
            except BaseException:
                self._stop_quietly()  # the engines could not start: leave no controller behind
                raise
        return self

    def _connect_client(self, timeout: float = 30.0, **client_kwargs: Any):
        from ..client import Client

        if self._client is not None and not client_kwargs:
            return self._client
        client = Client(self.profile_dir.client_file(self.cluster_id), timeout=timeout, cluster=self,
                        **client_kwargs)  # as ipyparallel: rc.cluster is this cluster
        if not client_kwargs:
            self._client = client
        return client

    def dashboard(self, port: int = 0, **kwargs: Any):
        """The cluster's live web dashboard, served from this process (see Client.dashboard)."""
        from ..dashboard import start_dashboard

        return start_dashboard(url_file=self.profile_dir.client_file(self.cluster_id), port=port, **kwargs)

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _start_and_connect(self, n: int | None = None, activate: bool = False, timeout: Any = ENGINE_TIMEOUT):
        if timeout is ENGINE_TIMEOUT:
            timeout = self.engine_timeout
        self._start_cluster(n)
        try:
            rc = self._wait_for_engines(timeout=timeout, interactive=False)
        except BaseException:
            self._stop_quietly()
            raise
        if activate:
            rc.activate()  # a blocking DirectView on all engines behind %px, %%px, %autopx
        return rc

    def _stop_controller(self) -> None:
        super()._stop_controller()
        self.controller = None
        if self.state is not None and self.state_file.exists():
            self._save()

    def _stop_cluster(self) -> None:
        """Engines, then forwarders, then the controller, then every job left in the job
        ledger; the state file goes once nothing is left."""
        self._close_client()
        errors = []
        ours = self.controller is not None
        for stop in (self._stop_pool, self._stop_engines, self._stop_forwarders, self._stop_controller,
                     self._cancel_ledger):
            try:
                stop()
            except (ClusterError, LauncherError) as e:
                errors.append(str(e))
        if errors:
            raise ClusterError("; ".join(errors))
        if ours:
            self._remove_connection_files()
        self.state_file.unlink(missing_ok=True)
        self.state = None
        _to_stop_at_exit.discard(self)

    # -- the public API: coroutines, and their blocking _sync twins -----------------------------

    async def start_controller(self, timeout: float | None = 30.0) -> ConnectionInfo:
        """Start the controller and wait for its connection file. A batch controller's
        ``timeout`` counts from the moment its job runs (None: wait while it is queued)."""
        return await asyncio.to_thread(self._start_controller, timeout)

    def start_controller_sync(self, timeout: float | None = 30.0) -> ConnectionInfo:
        return self._start_controller(timeout)

    async def start_engines(self, n: int | None = None, engine_set_id: str | None = None) -> str:
        """Start an engine set of ``n`` engines (default: the cluster's n); return its id,
        a key of ``cluster.engines``. Does not wait for them: see :meth:`wait_for_engines`."""
        return await asyncio.to_thread(self._start_engines, n, engine_set_id)

    def start_engines_sync(self, n: int | None = None, engine_set_id: str | None = None) -> str:
        return self._start_engines(n, engine_set_id)

    async def start_cluster(self, n: int | None = None) -> Cluster:
        """Start the controller (unless running) and ``n`` engines; return self without
        waiting for the engines."""
        return await asyncio.to_thread(self._start_cluster, n)

    def start_cluster_sync(self, n: int | None = None) -> Cluster:
        return self._start_cluster(n)

    async def connect_client(self, **client_kwargs: Any):
        """A Client connected to this cluster (``rc.cluster`` is this object)."""
        return await asyncio.to_thread(self._connect_client, **client_kwargs)

    def connect_client_sync(self, **client_kwargs: Any):
        return self._connect_client(**client_kwargs)

    async def wait_for_engines(self, n: int | None = None, timeout: float | None = 60.0,
                               interactive: bool | None = False):
        """Wait until ``n`` engines (default: all started) registered; return the Client.
        Time a batch job spends queued does not count against ``timeout``."""
        return await asyncio.to_thread(self._wait_for_engines, n, timeout, interactive)

    def wait_for_engines_sync(self, n: int | None = None, timeout: float | None = 60.0,
                              interactive: bool | None = None):
        return self._wait_for_engines(n, timeout, interactive)

    async def start_and_connect(self, n: int | None = None, activate: bool = False, *,
                                timeout: Any = ENGINE_TIMEOUT):
        """Start the cluster, wait for every engine (``timeout``: default ``engine_timeout``,
        None = no limit), return a connected Client; with ``activate``, ``%px`` and friends
        run on all engines."""
        return await asyncio.to_thread(self._start_and_connect, n, activate, timeout)

    def start_and_connect_sync(self, n: int | None = None, activate: bool = False, *,
                               timeout: Any = ENGINE_TIMEOUT):
        return self._start_and_connect(n, activate, timeout)

    async def add_engines(self, n: int, wait: bool = False, timeout: float | None = 60.0) -> Launcher:
        """Start ``n`` more engines in a new engine set; with ``wait``, until they registered."""
        return await asyncio.to_thread(self._add_engines, n, wait, timeout)

    def add_engines_sync(self, n: int, wait: bool = False, timeout: float | None = 60.0) -> Launcher:
        return self._add_engines(n, wait, timeout)

    async def signal_engines(self, signum: int | str, engine_set_id: str | list[str] | None = None) -> None:
        """Send a signal (``signal.SIGINT``, ``"SIGUSR1"``...) to the engines of one set or
        several (default: all)."""
        await asyncio.to_thread(self._signal_engines, signum, engine_set_id)

    def signal_engines_sync(self, signum: int | str, engine_set_id: str | list[str] | None = None) -> None:
        self._signal_engines(signum, engine_set_id)

    async def stop_engines(self, engine_set_id: str | int | list[Any] | None = None) -> None:
        """Stop engine sets (their ids, default: all) or single engines (engine ids, ints)."""
        await asyncio.to_thread(self._stop_engines, engine_set_id)

    def stop_engines_sync(self, engine_set_id: str | int | list[Any] | None = None) -> None:
        self._stop_engines(engine_set_id)

    async def restart_engines(self, engine_set_id: str | list[str] | None = None, timeout: float = 60.0) -> None:
        """Stop and start again each given engine set (default: all), same id and size; an
        MPI set gets its old engine ids back. Wait for them with :meth:`wait_for_engines`."""
        await asyncio.to_thread(self._restart_engines, engine_set_id, timeout)

    def restart_engines_sync(self, engine_set_id: str | list[str] | None = None, timeout: float = 60.0) -> None:
        self._restart_engines(engine_set_id, timeout)

    async def restart_controller(self, timeout: float = 30.0) -> ConnectionInfo:
        """Start a new controller for a running cluster whose controller died: same key and
        ports, same task database; the engines re-attach."""
        return await asyncio.to_thread(self._restart_controller, timeout)

    def restart_controller_sync(self, timeout: float = 30.0) -> ConnectionInfo:
        return self._restart_controller(timeout)

    async def stop_controller(self) -> None:
        """Stop the controller (which tells its engines to leave); the engine sets stay in
        the cluster until :meth:`stop_engines` / :meth:`stop_cluster`."""
        await asyncio.to_thread(self._stop_controller)

    def stop_controller_sync(self) -> None:
        self._stop_controller()

    async def stop_cluster(self) -> None:
        """Stop the engines, the controller and every job in the job ledger."""
        await asyncio.to_thread(self._stop_cluster)

    def stop_cluster_sync(self) -> None:
        self._stop_cluster()

    # -- context managers: start and connect, then stop ---------------------------------------

    def __enter__(self):
        return self.start_and_connect_sync()

    def __exit__(self, *exc: Any) -> None:
        self.stop_cluster_sync()

    async def __aenter__(self):
        return await self.start_and_connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop_cluster()

    def __repr__(self) -> str:
        cid = f" cluster_id={self.cluster_id!r}" if self.cluster_id else ""
        sets = f" engine_sets={list(self.engines)}" if self.engines else ""
        return (f"<Cluster profile={self.profile_dir.name!r}{cid} n={self.n} engines={self.engine_launcher!r} "
                f"controller={self.controller_launcher!r}{sets}>")


# Cluster() arguments a traitlets config's c.Cluster section may give, with their defaults
# (an argument left at its default takes the config's value, as in ipyparallel).
_DEFAULTS = {name: p.default for name, p in inspect.signature(Cluster.__init__).parameters.items()
             if name in ("n", "profile", "profile_dir", "cluster_id", "controller_args", "engine_args", "log_level",
                         "shutdown_atexit", "engine_timeout", "delay", "controller_ip", "controller_location",
                         "engine_launcher_class", "controller_launcher_class", "send_engines_connection_env")}
