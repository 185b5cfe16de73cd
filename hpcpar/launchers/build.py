"""Entry points for `hpcpar start`, `stop`, `status` and `render`: build launchers from the
config, check the network before submitting, and stop or list jobs from the ledger."""

from __future__ import annotations

import ipaddress
import sys
import time
from collections.abc import Iterable
from typing import Any

from ..config import Config, ConfigError, defaults_config
from ..connection import CONNECTION_ENV
from ..paths import ProfileDir
from .base import Launcher, LauncherError, get_launcher_class
from .batch import BatchLauncher, JobState, RenderedJob
from .ledger import JobRecord, forget_jobs, read_jobs

RENDER_PLACEHOLDER = "<engine connection JSON: written by the controller when it starts>"


def make_launcher(
    name: str,
    role: str,
    n: int,
    *,
    config: Config | None = None,
    profile_dir: ProfileDir | None = None,
    cluster_id: str = "",
) -> Launcher:
    """A launcher for ``role`` ("controller" or "engines") configured from ``config``.

    Batch launchers are checked here (LauncherError on an impossible combination, such as
    SGE cpus_per_engine > 1 without a parallel environment), so nothing is submitted.
    """
    cls = get_launcher_class(name)
    if issubclass(cls, BatchLauncher):
        options = (config or defaults_config()).launcher_options(cls.name, role)
        launcher = cls(role=role, n=n, profile_dir=profile_dir, cluster_id=cluster_id, options=options)
        launcher.check()
        return launcher
    from_config = getattr(cls, "from_config", None)
    if from_config is not None:  # launchers with a config section of their own (mpi, ssh)
        return from_config(role, n, config or defaults_config(), profile_dir=profile_dir, cluster_id=cluster_id)
    return cls(role=role, n=n)


def is_batch(name: str) -> bool:
    try:
        return issubclass(get_launcher_class(name), BatchLauncher)
    except LauncherError:
        return False


def _is_loopback(address: str) -> bool:
    if address in ("localhost", "") or address.startswith("127."):
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_network(config: Config) -> None:
    """Fail before submitting when remote engines could never reach the controller."""
    ip = config["controller.ip"]
    remote = [
        name
        for name in (config["cluster.engines"], config["cluster.controller"])
        if name not in ("local", "mpi") and is_batch(name)
    ]
    # A controller bound to loopback is unreachable from other hosts whatever it advertises.
    if remote and _is_loopback(ip):
        where = config.source_of("controller.ip")
        raise ConfigError(
            [
                f"controller.ip is {ip!r} (loopback, from {where}) but {remote[0]!r} runs jobs on "
                "other hosts, which cannot reach it: set ip = \"*\" (or an address the compute "
                "nodes reach) in [controller] of the profile's config.toml, or pass --ip '*'"
            ]
        )
    if config["cluster.engines"] == "ssh" and _is_loopback(ip):
        from .ssh import SSHLauncher

        elsewhere = SSHLauncher(role="engines", options=config.section("ssh")).hosts_elsewhere()
        if elsewhere:
            where = config.source_of("controller.ip")
            raise ConfigError([
                f"controller.ip is {ip!r} (loopback, from {where}) but the ssh engines on "
                f"{', '.join(elsewhere)} run on other hosts, which cannot reach it: set ip = \"*\" (or an "
                "address those hosts reach) in [controller] of the profile's config.toml, or pass --ip '*'"
            ])


def controller_command(config: Config, profile_dir: ProfileDir, cluster_id: str = "") -> list[str]:
    """``python -m hpcpar controller ...`` with the [controller] settings as flags."""
    argv = [sys.executable, "-m", "hpcpar", "controller", "--profile-dir", str(profile_dir.path)]
    argv += ["--cluster-id", cluster_id]
    if config["controller.ip"]:
        argv += ["--ip", config["controller.ip"]]
    if config["controller.port"]:
        argv += ["--port", str(config["controller.port"])]
    if config["controller.engine_port"]:
        argv += ["--engine-port", str(config["controller.engine_port"])]
    if config["controller.location"]:
        argv += ["--location", config["controller.location"]]
    argv += ["--heartbeat-interval", f"{config['controller.heartbeat_interval']:g}"]
    argv += ["--heartbeat-timeout", f"{config['controller.heartbeat_timeout']:g}"]
    argv += ["--transport", config["security.transport"]]
    argv += ["--max-message-size", str(config["security.max_message_size"])]
    argv += ["--replay-window", f"{config['security.replay_window']:g}"]
    return argv


def engine_command(
    config: Config,
    profile_dir: ProfileDir,
    cluster_id: str = "",
    *,
    mpi: bool = False,
    profile_files: bool | None = None,
) -> list[str]:
    """``python -m hpcpar engine ...`` with the [engine] timeouts as flags.

    With connection = "env" a batch job script supplies $HPCPAR_CONNECTION_INFO, otherwise
    the engine reads the profile's security/ files; ``profile_files=True`` (engines on this
    machine) always names the profile directory.
    """
    argv = [sys.executable, "-m", "hpcpar", "engine"]
    if profile_files or (profile_files is None and config["engine.connection"] == "file"):
        argv += ["--profile-dir", str(profile_dir.path), "--cluster-id", cluster_id]
    argv += ["--controller-timeout", f"{config['engine.controller_timeout']:g}"]
    argv += ["--connect-timeout", f"{config['engine.connect_timeout']:g}"]
    if mpi:
        argv.append("--mpi")
    return argv


def engine_env(config: Config, engine_json: str | None) -> dict[str, str]:
    """Environment for engine jobs: the connection info, never on a command line."""
    if config["engine.connection"] != "env":
        return {}
    return {CONNECTION_ENV: engine_json if engine_json is not None else RENDER_PLACEHOLDER}


def batch_engine_env(config: Config, profile_dir: ProfileDir, cluster_id: str) -> dict[str, str]:
    """``engine_env`` for jobs submitted now: the running controller's engine file, read here."""
    if config["engine.connection"] != "env":
        return {}
    try:
        engine_json = profile_dir.engine_file(cluster_id).read_text()
    except OSError as e:
        raise LauncherError(f"cannot read the engine connection file ({e}); is the controller up?") from None
    return engine_env(config, engine_json)


def render_cluster(
    config: Config, profile_dir: ProfileDir, cluster_id: str = "", n: int | None = None
) -> list[RenderedJob]:
    """Every file `hpcpar start` would submit for this config; submits nothing."""
    check_network(config)
    jobs: list[RenderedJob] = []
    controller = make_launcher(
        config["cluster.controller"], "controller", 1, config=config, profile_dir=profile_dir, cluster_id=cluster_id
    )
    if isinstance(controller, BatchLauncher):
        log = str(profile_dir.log_file("controller", cluster_id))
        jobs.append(controller.render(controller_command(config, profile_dir, cluster_id), {}, log))
    count = n if n is not None else config["cluster.n"]
    engines = make_launcher(
        config["cluster.engines"], "engines", max(count, 1), config=config, profile_dir=profile_dir, cluster_id=cluster_id
    )
    if isinstance(engines, BatchLauncher):
        log = str(profile_dir.log_file("engines", cluster_id))
        command = engine_command(config, profile_dir, cluster_id, mpi=engines.mpi)
        jobs.append(engines.render(command, engine_env(config, None), log))
    return jobs


def _launcher_for(
    system: str,
    records: Iterable[JobRecord],
    profile_dir: ProfileDir,
    cluster_id: str,
    config: Config | None = None,
) -> BatchLauncher:
    records = list(records)
    cls = get_launcher_class(system)
    if not issubclass(cls, BatchLauncher):
        raise LauncherError(f"job ledger names {system!r}, which is not a batch launcher")
    options: dict[str, Any] = config.launcher_options(system, records[0].role) if config else {}
    cancel = next((r.cancel for r in records if r.cancel), None)
    if cancel:
        # cancel_argv([]) was recorded: the configured command, without job ids.
        key = "job_command" if system == "winhpc" else "cancel_command"
        options[key] = cancel[:1] if system == "winhpc" else cancel
    return cls(
        role=records[0].role,
        n=len(records),
        profile_dir=profile_dir,
        cluster_id=cluster_id,
        options=options,
        job_ids=[r.job_id for r in records],
    )


def _by_system(records: list[JobRecord]) -> dict[str, list[JobRecord]]:
    groups: dict[str, list[JobRecord]] = {}
    for r in records:
        groups.setdefault(r.system, []).append(r)
    return groups


def recorded_jobs(profile_dir: ProfileDir, cluster_id: str = "") -> list[JobRecord]:
    return read_jobs(profile_dir, cluster_id)


def stop_recorded_jobs(
    profile_dir: ProfileDir, cluster_id: str = "", timeout: float = 30.0, config: Config | None = None
) -> list[str]:
    """Cancel every job in the ledger (jobs already gone are fine); return their ids.

    Works from any process after any crash: only the ledger on disk is needed.
    """
    cancelled: list[str] = []
    problems: list[str] = []
    for system, records in _by_system(read_jobs(profile_dir, cluster_id)).items():
        launcher = _launcher_for(system, records, profile_dir, cluster_id, config)
        try:
            launcher.cancel(launcher.job_ids, timeout)
        except LauncherError as e:
            problems.append(str(e))
            continue
        cancelled.extend(launcher.job_ids)
        forget_jobs(profile_dir, cluster_id, set(launcher.job_ids))
    if problems:
        raise LauncherError("; ".join(problems))
    return cancelled


def wait_released(
    records: list[JobRecord],
    profile_dir: ProfileDir,
    cluster_id: str = "",
    timeout: float = 60.0,
    progress: Any = None,
    config: Config | None = None,
) -> list[str]:
    """Wait (at most ``timeout`` s) until the scheduler holds none of these jobs any more,
    not even being deleted (SGE ``dr``, SLURM ``COMPLETING``); return the ids still held.

    ``progress`` gets a line each time the set of held jobs (or their states) changes.
    """
    from .batch import PollError

    groups = {system: _launcher_for(system, recs, profile_dir, cluster_id, config)
              for system, recs in _by_system(list(records)).items()}
    deadline = time.monotonic() + timeout
    shown = ""
    while True:
        held: dict[str, str] = {}
        for launcher in groups.values():
            try:
                states = launcher.unreleased(launcher.job_ids)
            except (LauncherError, PollError) as e:
                states = {j: JobState("unknown", "", str(e)) for j in launcher.job_ids}
            held.update({j: s.native or s.state for j, s in states.items()})
        if not held:
            return []
        line = ("waiting for the scheduler to let go of job(s) "
                + ", ".join(f"{j} ({state})" for j, state in sorted(held.items())))
        if progress is not None and line != shown:
            progress(line)
            shown = line
        if time.monotonic() >= deadline:
            return sorted(held)
        time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))


def recorded_job_states(
    profile_dir: ProfileDir, cluster_id: str = "", config: Config | None = None
) -> dict[str, tuple[JobRecord, JobState]]:
    """Queue state of every ledger job, one batched status call per system."""
    out: dict[str, tuple[JobRecord, JobState]] = {}
    for system, records in _by_system(read_jobs(profile_dir, cluster_id)).items():
        launcher = _launcher_for(system, records, profile_dir, cluster_id, config)
        states = launcher.poll(force=True)
        for r in records:
            out[r.job_id] = (r, states.get(r.job_id, JobState("unknown", "", launcher._poll.last_error)))
    return out
