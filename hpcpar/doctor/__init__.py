"""`hpcpar doctor`: checks, run on a login node, of everything `hpcpar start` relies on.

One module per group of checks: scheduler (commands, versions, pending reasons), job
(the test job on a compute node), network (the controller's advertised addresses),
mpi, ssh, files (permissions, transport). :func:`run_doctor` runs them in order and
returns a :class:`Report`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..paths import ProfileDir
from .report import FAIL, OK, SKIP, Check, Report

__all__ = ["Check", "DoctorOptions", "Report", "run_doctor"]


@dataclass
class DoctorOptions:
    profile_dir: ProfileDir
    overrides: dict[str, Any] = field(default_factory=dict)
    timeout: float = 120.0  # for the test job to start
    on: str | None = None
    job: bool = True
    mpi: bool = True
    cluster_id: str = ""


def running_engine_addresses(pd: ProfileDir, cluster_id: str) -> list[tuple[str, int]]:
    """(host, port) of the engine URLs of this profile's running controller, or []: a
    connection file left by a controller that died on this host is ignored."""
    import os
    import socket
    from urllib.parse import urlsplit

    from ..connection import ConnectionFileError, ConnectionInfo

    try:
        info = ConnectionInfo.load(pd.engine_file(cluster_id))
    except (ConnectionFileError, OSError, ValueError):
        return []
    if info.controller_pid and info.location in ("", socket.gethostname()):
        try:
            os.kill(info.controller_pid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
    found = []
    for url in info.urls:
        parts = urlsplit(url)
        if parts.hostname and parts.port:
            found.append((parts.hostname, parts.port))
    return found


def config_checks(options: DoctorOptions) -> tuple[Any, list[Check]]:
    """The merged config (None when invalid), and the rows saying whether it is usable."""
    from ..commands.checks import check_local_bind
    from ..config import ConfigError, load_config
    from ..launchers.build import check_network, is_batch

    pd = options.profile_dir
    try:
        config = load_config(overrides=options.overrides, profile_dir=pd)
    except ConfigError as e:
        return None, [Check("config", FAIL, "; ".join(e.problems), "fix the settings named above")]
    engines, controller = config["cluster.engines"], config["cluster.controller"]
    rows = [Check("config", OK, f"engines {engines!r}, controller {controller!r}, "
                  f"ip {config['controller.ip']!r} (from {config.source_of('controller.ip')})")]
    try:
        check_network(config)
    except ConfigError as e:
        rows.append(Check("controller-ip", FAIL, "; ".join(e.problems),
                          "pass --ip '*' (or an address of this host the compute nodes reach)"))
    if controller == "local" or not is_batch(controller):
        why = check_local_bind(config["controller.ip"], config.source_of("controller.ip"))
        if why:
            rows.append(Check("controller-ip", FAIL, why, "pass --ip '*' or one of this host's addresses"))
    return config, rows


def run_doctor(options: DoctorOptions, say: Callable[[str], None] = lambda line: None) -> Report:
    from ..launchers.build import is_batch
    from .files import permission_checks, transport_check
    from .mpi import mpi_checks
    from .scheduler import detected_systems, scheduler_checks
    from .ssh import ssh_checks

    report = Report()
    config, rows = config_checks(options)
    report.extend(rows)
    report.extend(permission_checks(options.profile_dir))
    if config is None:
        return report
    system = config["cluster.engines"]
    batch = is_batch(system)
    say(f"checking the {system} commands..." if batch else "looking for batch systems...")
    report.extend(scheduler_checks(config, system) if batch else detected_systems())
    usable = batch and not any(c.status == FAIL for c in report.checks if c.name.startswith("scheduler"))
    if options.job and usable:
        report.extend(_test_job(config, system, options, say))
    elif batch:
        why = "--no-job" if not options.job else "the scheduler commands failed"
        report.add(Check("test-job", SKIP, f"not submitted ({why})"))
    if options.mpi:
        say("checking MPI...")
        report.extend(mpi_checks(config))
    report.extend(ssh_checks(config, options.on))
    report.add(transport_check(config))
    return report


def _test_job(config: Any, system: str, options: DoctorOptions, say: Callable[[str], None]) -> list[Check]:
    from ..launchers.base import LauncherError
    from .job import outcome_checks, run_test_job
    from .network import Listener

    listener = Listener(config["controller.ip"], config["controller.location"], config["controller.engine_port"],
                        secrets.token_hex(16))
    try:
        listener.open()
    except OSError as e:
        return [Check("controller-reach", FAIL, f"cannot listen on {config['controller.ip']!r} here: {e}",
                      "pass --ip '*' or an address of this host")]
    outcome, rows = None, []
    try:
        running = running_engine_addresses(options.profile_dir, options.cluster_id)
        outcome = run_test_job(config, system, options.profile_dir, listener, options.timeout, say, running,
                               mpi=options.mpi)
        rows = outcome_checks(outcome, system, listener, config)
    except LauncherError as e:
        rows = [Check("test-job", FAIL, f"{system} did not take the test job: {e}",
                      "fix what the scheduler says; 'hpcpar render' shows the script it was given")]
    finally:
        listener.close()
        if outcome is not None:
            keep_outputs = any(c.status == FAIL for c in rows if c.name == "test-job")
            for path in outcome.files + ([] if keep_outputs else outcome.outputs):
                path.unlink(missing_ok=True)
    return rows
