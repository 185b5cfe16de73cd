"""The test job: one tiny job submitted through the same launcher class and template
`hpcpar start --engines SYSTEM` uses, running :mod:`hpcpar.doctor.probe` on a compute
node. A bounded wait with a progress line; a job that does not start in time is
cancelled and reported as queued, with the scheduler's reason when it gives one.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hpcpar

from ..config import Config
from ..config.units import parse_walltime
from ..launchers.base import (
    CANCELLED,
    DONE,
    FAILED,
    HELD,
    PENDING,
    RUNNING,
    LauncherError,
    get_launcher_class,
)
from ..launchers.batch import BatchLauncher
from ..paths import ProfileDir
from . import probe
from .network import Listener, reach_check
from .report import FAIL, INFO, OK, SKIP, WARN, Check
from .scheduler import pending_reason

PROBE_WALLTIME = 300  # seconds: short jobs start sooner (backfill)
REPORT_GRACE = 10.0  # seconds to wait for the report once the job has ended


@dataclass
class JobOutcome:
    state: str = PENDING
    job_id: str = ""
    reason: str = ""
    waited: float = 0.0
    ran_for: float = 0.0
    error: str = ""
    report: dict[str, Any] | None = None
    files: list[Path] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)


def probe_launcher(config: Config, system: str, pd: ProfileDir, cluster_id: str) -> BatchLauncher:
    """The engines launcher `hpcpar start` would build, reduced to one plain job."""
    cls = get_launcher_class(system)
    if not issubclass(cls, BatchLauncher):
        raise LauncherError(f"{system!r} is not a batch system: there is no test job to submit")
    options = config.launcher_options(cls.name, "engines")
    options.update(mode="array", engines_per_job=1, forwarder_per_node=False, job_name="hpcpar-doctor",
                   cpus_per_engine=1, gpus_per_engine=0, epilogue=[])
    configured = parse_walltime(options["walltime"]) if options.get("walltime") else 0
    if not configured or configured > PROBE_WALLTIME:
        options["walltime"] = "00:05:00"
    launcher = cls(role="engines", n=1, profile_dir=pd, cluster_id=cluster_id, options=options)
    launcher.check()
    return launcher


def _progress_line(say: Callable[[str], None], launcher: BatchLauncher, state: str, waited: float,
                   limit: float) -> None:
    say(f"waiting for {launcher.name} job {', '.join(launcher.job_ids)}: {state} {waited:.0f}/{limit:.0f} s")


def run_test_job(config: Config, system: str, pd: ProfileDir, listener: Listener, timeout: float,
                 say: Callable[[str], None], running: list[tuple[str, int]] | None = None,
                 mpi: bool = True) -> JobOutcome:
    """Submit the probe, wait at most ``timeout`` for it to start (and as long again to
    finish), always cancel what is left, and collect the report. ``mpi``: the probe also
    starts two MPI ranks on the compute node, with the mpiexec the engines would use."""
    token = listener.token
    cluster_id = f"doctor-{token[:8]}"
    if not pd.path.exists():
        pd.path.mkdir(mode=0o700, parents=True)  # private, as 'hpcpar start' would make it
    pd.run.mkdir(exist_ok=True)
    pd.log.mkdir(exist_ok=True)
    shared = pd.run / f"doctor-{token[:8]}.txt"
    shared_text = secrets.token_hex(16)
    shared.write_text(shared_text)
    report_file = pd.run / f"doctor-{token[:8]}-report.json"
    orders = {"token": token, "addresses": [[a, listener.port] for a in listener.addresses],
              "shared_file": str(shared), "shared_text": shared_text, "report_file": str(report_file),
              "connect_timeout": 5, "running": [list(a) for a in running or []],
              "mpi": {"run": mpi, "command": list(config["mpi.command"]), "n_flag": config.get("mpi.n_flag") or "-n",
                      "args": list(config.get("mpi.args") or []), "timeout": 60}}
    out = JobOutcome(files=[shared, report_file])
    launcher = probe_launcher(config, system, pd, cluster_id)
    command = [sys.executable, "-c", Path(probe.__file__).read_text()]
    log = pd.log / f"doctor-{token[:8]}.log"
    started_at = time.monotonic()
    try:
        launcher.start(command, {probe.PROBE_ENV: json.dumps(orders)}, str(log))
    except LauncherError:
        for path in [shared, report_file, *pd.run.glob(f"engines-{cluster_id}.*")]:
            path.unlink(missing_ok=True)  # rejected: nothing of it stays in the profile
        raise
    try:
        out.job_id = ", ".join(launcher.job_ids)
        say(f"submitted {system} test job {out.job_id}")
        running_at = None
        last_said = 0.0
        while True:
            state = launcher.status()
            now = time.monotonic()
            if state == RUNNING and running_at is None:
                running_at = now
            if state in (DONE, FAILED, CANCELLED) or listener.report_text():
                out.state = state
                break
            if running_at is None and now - started_at > timeout:
                out.state = state
                out.reason = pending_reason(system, launcher.job_ids[0]) if state in (PENDING, HELD) else ""
                break
            if running_at is not None and now - running_at > max(timeout, 60.0):
                out.state, out.error = RUNNING, f"still running after {now - running_at:.0f} s"
                break
            if now - last_said >= 5:
                _progress_line(say, launcher, state, now - started_at, timeout)
                last_said = now
            time.sleep(0.5)
        out.waited = time.monotonic() - started_at
        if out.state in (DONE, FAILED, CANCELLED) or listener.report_text():
            text = listener.wait_report(REPORT_GRACE if out.state != RUNNING else 30.0)
            out.report = _parse(text) or _read_report(report_file) or _from_output(pd, token[:8])
    finally:
        try:
            launcher.stop(timeout=30)
        except LauncherError as e:
            out.error = out.error or f"could not cancel the test job: {e}"
    out.ran_for = time.monotonic() - (running_at or started_at) if out.job_id else 0.0
    out.files += [p for p in pd.run.glob(f"engines-{cluster_id}.*")]
    out.outputs = sorted(pd.log.glob(f"doctor-{token[:8]}*"))
    return out


def _parse(text: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(text) if text else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        return _parse(path.read_text())
    except OSError:
        return None


def _from_output(pd: ProfileDir, stem: str) -> dict[str, Any] | None:
    """Last resort: the report line in the job's output file (shared filesystem only)."""
    for path in sorted(pd.log.glob(f"doctor-{stem}*")):
        try:
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith(probe.MAGIC + "-REPORT "):
                    return _parse(line.split(" ", 1)[1])
        except OSError:
            continue
    return None


def outcome_checks(out: JobOutcome, system: str, listener: Listener, config: Config) -> list[Check]:
    """test-job, compute-python, compute-hpcpar, controller-reach, shared-filesystem, compute-mpi."""
    ip, source = config["controller.ip"], config.source_of("controller.ip")
    what = f"{system} job {out.job_id}"
    if out.report is None and out.state in (PENDING, HELD):
        reason = f" (reason: {out.reason})" if out.reason else ""
        rows = [Check("test-job", WARN, f"{what} still {out.state} after {out.waited:.0f} s{reason}; cancelled",
                      ("a held job never starts by itself: look for a hold in the site's submit defaults or "
                       "extra_directives, or ask the admins why the scheduler holds it") if out.state == HELD else
                      "run 'hpcpar doctor' again with a longer --timeout, or pick a queue with free nodes (--queue)", {"job_id": out.job_id, "state": out.state, "reason": out.reason})]
        return rows + [Check(n, SKIP, "the test job did not run") for n in
                       ("compute-python", "compute-hpcpar", "controller-reach", "shared-filesystem")]
    if out.report is None:
        reached = listener.reached()
        rows = [Check("test-job", FAIL, f"{what} ended {out.state} without a report"
                      + (f" ({out.error})" if out.error else ""),
                      f"read the job's output ({', '.join(map(str, out.outputs)) or 'not found here'}); "
                      "an engine job would fail the same way", {"job_id": out.job_id, "state": out.state})]
        rows.append(reach_check(listener, None, ip, source, "the compute node") if not reached else
                    Check("controller-reach", OK, "the job reached the controller's address"))
        return rows
    r = out.report
    host = r.get("hostname", "?")
    rows = [Check("test-job", OK, f"{what} ran on {host} (queued and ran in {out.waited:.0f} s)", "",
                  {"job_id": out.job_id, "host": host})]
    rows.append(_python_check(r, host))
    rows.append(_hpcpar_check(r, host))
    rows.append(_zmq_check(r, host, config))
    reach = reach_check(listener, r, ip, source, host)
    if config["cluster.controller"] != "local":
        # The controller is a batch job too: engines reach it on a compute node, not here.
        reach.result += f" (the controller runs as a {config['cluster.controller']} job, so this only tests " \
            "the way from the compute nodes to this login node)"
        reach.status = INFO if reach.status != OK else OK
    rows.append(reach)
    rows.append(_shared_check(r, host, config))
    if r.get("running"):
        rows.append(_running_check(r["running"], host))
    from .mpi import compute_mpi_check

    rows.append(compute_mpi_check(r.get("mpi", {}), host, config["batch.mode"] == "mpi"))
    return rows


def _running_check(entries: list[dict[str, Any]], host: str) -> Check:
    """The profile's running controller: which of its engine URLs the compute node reaches."""
    urls = [f"{e['host']}:{e['port']}" for e in entries]
    reached = [u for u, e in zip(urls, entries) if e.get("reached")]
    details = {"advertised": urls, "reached": reached}
    if reached:
        return Check("running-controller", OK, f"{host} reached the running controller's engine port at "
                     f"{', '.join(reached)}", "", details)
    tried = ", ".join(f"{u} ({e.get('error') or '?'})" for u, e in zip(urls, entries))
    return Check("running-controller", FAIL, f"{host} reached none of the running controller's engine URLs: {tried}",
                 "its engines cannot register: restart the cluster with --ip '*' (or an address the compute nodes "
                 "reach), or open its engine port in the firewall", details)


def _python_check(r: dict[str, Any], host: str) -> Check:
    here = platform.python_version()
    there = r.get("python", "?")
    text = f"{host}: Python {there} ({r.get('python_executable', '?')}); here {here}"
    if there.split(".")[:2] != here.split(".")[:2]:
        return Check("compute-python", WARN, text, "use the same Python version on both sides (functions are "
                     "pickled by bytecode): set [engine] python to a matching interpreter")
    return Check("compute-python", OK, text)


def _hpcpar_check(r: dict[str, Any], host: str) -> Check:
    facts = r.get("hpcpar", {})
    if not facts.get("importable"):
        return Check("compute-hpcpar", FAIL, f"{host}: hpcpar cannot be imported ({facts.get('error', '?')})",
                     "install hpcpar into the compute nodes' Python (a shared venv), or set [engine] python "
                     "to an interpreter that has it; engines cannot start without it")
    if facts.get("engine_error"):
        return Check("compute-hpcpar", FAIL, f"{host}: hpcpar {facts.get('version')} imports, but its engine does "
                     f"not ({facts['engine_error']})",
                     "install hpcpar with its dependencies (pip install hpcpar) into the compute nodes' Python, or "
                     "set [engine] python to an interpreter that has them")
    text = f"{host}: hpcpar {facts.get('version')} ({facts.get('path')}); here {hpcpar.__version__}"
    if facts.get("version") != hpcpar.__version__:
        return Check("compute-hpcpar", WARN, text, "install the same hpcpar version on both sides")
    return Check("compute-hpcpar", OK, text)


def _zmq_check(r: dict[str, Any], host: str, config: Config) -> Check:
    """pyzmq on the compute node, with CurveZMQ when the cluster would use curve."""
    from .files import effective_transport

    facts = r.get("zmq", {})
    if not facts.get("importable"):
        return Check("compute-zmq", FAIL, f"{host}: pyzmq cannot be imported ({facts.get('error', '?')})",
                     "install hpcpar with its dependencies into the compute nodes' Python")
    text = f"{host}: pyzmq {facts.get('version')} (libzmq {facts.get('libzmq')}), CurveZMQ " + \
        ("yes" if facts.get("curve") else "no")
    if effective_transport(config)[0] == "curve" and not facts.get("curve"):
        return Check("compute-zmq", FAIL, text + "; the cluster would use transport curve",
                     "install pyzmq from PyPI on the compute nodes (its wheels include libsodium), or set "
                     "transport = \"hmac\" in [security]")
    return Check("compute-zmq", OK, text)


def _shared_check(r: dict[str, Any], host: str, config: Config) -> Check:
    shared = r.get("shared", {})
    directory = os.path.dirname(shared.get("path", "")) or "?"
    if shared.get("seen"):
        return Check("shared-filesystem", OK, f"{host} read the file written here in {directory}")
    needs = config["engine.connection"] == "file" or config["batch.forwarder_per_node"]
    return Check("shared-filesystem", FAIL if needs else WARN,
                 f"{host} cannot read {shared.get('path')} ({shared.get('error', '?')}): the profile directory "
                 "is not shared with the compute nodes",
                 ("engine.connection = \"file\" / forwarder_per_node need a shared profile directory: use "
                  "connection = \"env\", or set HPCPAR_DIR to a shared filesystem") if needs else
                 "engines get the connection info from the job script, so this works; logs and job output "
                 "stay on the compute nodes: set HPCPAR_DIR to a shared filesystem to see them here")
