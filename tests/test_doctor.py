"""`hpcpar doctor` on the real SLURM, Grid Engine and PBS-wrapper systems and on the
network-namespace node: it passes where `hpcpar start` works, and it catches a
controller address the compute node cannot reach, a job that never starts, files
other users can read, a missing scheduler, an unreachable SSH host.
In CI (CI=true) a missing system fails these tests; elsewhere they skip."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_helpers import hpcpar_cmd
from systems import CI_ENV, PBS_BIN, require_system

from hpcpar.launchers.ledger import ledger_path
from hpcpar.paths import ProfileDir


def env_for(system: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("SGE_ROOT", "SGE_CELL"):
        if name in CI_ENV:
            env[name] = CI_ENV[name]
    if system == "pbs":
        env["PATH"] = f"{PBS_BIN}{os.pathsep}{env['PATH']}"
    return env


def doctor(profile: str, *args: str, env: dict[str, str] | None = None, timeout: float = 150) -> tuple[int, dict]:
    done = subprocess.run(hpcpar_cmd("doctor", "--profile", profile, "--json", *args), capture_output=True,
                          text=True, timeout=timeout, env=env or dict(os.environ))
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (exit {done.returncode}): {done.stdout}\n{done.stderr}") from None
    return done.returncode, {c["name"]: c for c in doc["checks"]} | {"_ok": doc["ok"], "_stderr": done.stderr}


def statuses(checks: dict) -> dict[str, str]:
    return {k: v["status"] for k, v in checks.items() if not k.startswith("_")}


def assert_left_nothing(profile: str) -> None:
    pd = ProfileDir.for_profile(profile)
    assert not list(pd.run.glob("doctor-*")), list(pd.run.iterdir())
    assert not list(pd.run.glob("engines-doctor-*"))
    assert not list(pd.run.glob("jobs-doctor-*.json"))  # the ledger forgot the test job
    assert not list(pd.log.glob("doctor-*"))  # job output removed when the job ran fine
    assert not ledger_path(pd, "").exists()


def assert_passes(system: str, profile: str, *args: str) -> dict:
    code, checks = doctor(profile, "--engines", system, "--ip", "*", "--timeout", "60", *args, env=env_for(system))
    s = statuses(checks)
    assert code == 0 and checks["_ok"], checks
    for name in ("config", "scheduler-commands", "scheduler-answers", "test-job", "compute-hpcpar",
                 "shared-filesystem", "secret-files"):
        assert s[name] == "ok", (name, checks[name])
    assert s["controller-reach"] in ("ok", "warn"), checks["controller-reach"]
    assert checks["controller-reach"]["details"]["reached"], checks["controller-reach"]
    assert_left_nothing(profile)
    return checks


@pytest.mark.timeout(180)
def test_doctor_passes_on_slurm() -> None:
    require_system("slurm")
    checks = assert_passes("slurm", f"doc-slurm-{os.getpid()}")
    assert "slurm-wlm" in checks["scheduler-commands"]["details"]["version"]
    assert checks["controller-reach"]["status"] == "ok"  # the job runs on this host: every address works
    assert "127.0.0.1" in " ".join(checks["controller-reach"]["details"]["reached"])


@pytest.mark.timeout(180)
def test_doctor_passes_on_sge() -> None:
    require_system("sge")
    checks = assert_passes("sge", f"doc-sge-{os.getpid()}")
    assert checks["scheduler-commands"]["details"]["version"].startswith("SGE")


@pytest.mark.timeout(180)
def test_doctor_passes_on_pbs_wrappers() -> None:
    require_system("pbs")
    checks = assert_passes("pbs", f"doc-pbs-{os.getpid()}")
    assert PBS_BIN in checks["scheduler-commands"]["result"]


@pytest.mark.timeout(180)
def test_doctor_on_the_netns_node_reaches_only_the_bridge_address() -> None:
    require_system("slurm-netns")
    partition = CI_ENV.get("HPCPAR_SLURM_NETNS_PARTITION", "netns")
    node = CI_ENV.get("HPCPAR_SLURM_NETNS_NODE", "compute1")
    head = CI_ENV.get("HPCPAR_NETNS_HEAD_ADDR", "10.200.0.1")
    checks = assert_passes("slurm", f"doc-netns-{os.getpid()}", "--queue", partition)
    reach = checks["controller-reach"]
    assert checks["test-job"]["details"]["host"] == node
    assert [u.rsplit(":", 1)[0] for u in reach["details"]["reached"]] == [head], reach
    assert "127.0.0.1" in " ".join(reach["details"]["advertised"])  # advertised, and not reachable from there
    # MPI is tested where the engines would run: two ranks on the compute node.
    assert checks["compute-mpi"]["status"] == "ok", checks["compute-mpi"]
    assert f"on {node}:" in checks["compute-mpi"]["result"] and "2 ranks saw each other" in checks["compute-mpi"]["result"]


@pytest.mark.timeout(180)
def test_mpi_that_fails_only_on_the_compute_node_is_caught() -> None:
    """An mpiexec that works on the login node but not on the netns compute node (a site whose
    MPI module is not loaded in jobs): the login-node row passes, compute-mpi fails naming the node."""
    from test_mpi import require_mpi

    require_mpi()
    require_system("slurm-netns")
    partition = CI_ENV.get("HPCPAR_SLURM_NETNS_PARTITION", "netns")
    node = CI_ENV.get("HPCPAR_SLURM_NETNS_NODE", "compute1")
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    script = (f'[ "$(hostname)" = "{socket.gethostname()}" ] || {{ echo "no MPI module on $(hostname)" >&2; exit 3; }}; '
              f'exec {mpiexec} "$@"')
    profile = f"doc-mpi-{os.getpid()}"
    code, checks = doctor(profile, "--engines", "slurm", "--queue", partition, "--ip", "*", "--timeout", "60",
                          "--set", "batch.mode=\"mpi\"", "--set", f"mpi.command=['sh', '-c', '{script}', 'mpiexec']",
                          env=env_for("slurm"))
    assert checks["mpi"]["status"] == "ok", checks["mpi"]  # on this (login) node
    compute = checks["compute-mpi"]
    assert compute["status"] == "fail" and code == 1, compute
    assert f"on {node}:" in compute["result"] and "exited 3" in compute["result"], compute
    assert f"no MPI module on {node}" in compute["result"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("ip", ["127.0.0.1", "127.0.0.5"])
def test_doctor_catches_a_controller_address_the_netns_node_cannot_reach(ip: str) -> None:
    require_system("slurm-netns")
    partition = CI_ENV.get("HPCPAR_SLURM_NETNS_PARTITION", "netns")
    node = CI_ENV.get("HPCPAR_SLURM_NETNS_NODE", "compute1")
    profile = f"doc-unreach-{os.getpid()}"
    code, checks = doctor(profile, "--engines", "slurm", "--queue", partition, "--ip", ip, "--timeout", "60",
                          "--no-mpi", env=env_for("slurm"))
    assert code == 1 and not checks["_ok"]
    assert checks["test-job"]["status"] == "ok" and checks["test-job"]["details"]["host"] == node
    reach = checks["controller-reach"]
    assert reach["status"] == "fail", reach
    assert reach["details"]["reached"] == [] and reach["details"]["advertised"][0].startswith(ip + ":")
    assert node in reach["result"] and "--ip" in reach["fix"]
    assert_left_nothing(profile)


@pytest.mark.timeout(120)
def test_a_compute_python_without_hpcpar_and_its_dependencies_fails() -> None:
    """The system Python has no pyzmq (and no hpcpar unless PYTHONPATH reaches the job)."""
    require_system("slurm")
    system_python = "/usr/bin/python3"
    probe = subprocess.run([system_python, "-c", "import zmq"], capture_output=True, timeout=30)
    if probe.returncode == 0:
        pytest.skip(f"{system_python} has pyzmq: it is no Python without hpcpar's dependencies")
    profile = f"doc-nohp-{os.getpid()}"
    code, checks = doctor(profile, "--engines", "slurm", "--ip", "*", "--timeout", "60", "--no-mpi",
                          "--set", f"engine.python={system_python!r}", env=env_for("slurm"))
    assert code == 1
    hp = checks["compute-hpcpar"]
    assert hp["status"] == "fail" and "[engine] python" in hp["fix"], hp
    assert checks["compute-python"]["result"].count(system_python) == 1
    assert checks["compute-zmq"]["status"] == "fail" and "pyzmq" in checks["compute-zmq"]["result"]
    assert checks["controller-reach"]["status"] == "ok"  # the probe itself needs nothing but the stdlib


@pytest.mark.timeout(240)
def test_the_running_controllers_engine_port_is_tested_from_the_netns_node() -> None:
    """A cluster already runs in the profile: its real engine URLs are tried too. On loopback
    the netns node cannot reach it (fail) even though doctor's own '*' listener is reached."""
    require_system("slurm-netns")
    partition = CI_ENV.get("HPCPAR_SLURM_NETNS_PARTITION", "netns")
    head = CI_ENV.get("HPCPAR_NETNS_HEAD_ADDR", "10.200.0.1")
    for ip, expected in (("127.0.0.1", "fail"), ("*", "ok")):
        profile = f"doc-running-{os.getpid()}-{'lo' if ip.startswith('127') else 'all'}"
        start = subprocess.run(hpcpar_cmd("start", "--profile", profile, "-n", "0", "--ip", ip, "--daemonize"),
                               capture_output=True, text=True, timeout=120)
        assert start.returncode == 0, start.stdout + start.stderr
        try:
            code, checks = doctor(profile, "--engines", "slurm", "--queue", partition, "--ip", "*",
                                  "--timeout", "60", "--no-mpi", env=env_for("slurm"))
        finally:
            stop = subprocess.run(hpcpar_cmd("stop", "--profile", profile), capture_output=True, text=True,
                                  timeout=90)
        assert stop.returncode == 0, stop.stderr
        running = checks["running-controller"]
        assert running["status"] == expected, running
        assert checks["controller-reach"]["details"]["reached"]  # doctor's own listener on '*' was reached
        if expected == "fail":
            assert code == 1 and running["details"]["reached"] == [] and "--ip" in running["fix"]
        else:
            assert [u.rsplit(":", 1)[0] for u in running["details"]["reached"]] == [head]


@pytest.mark.timeout(120)
def test_a_test_job_that_does_not_start_is_cancelled_and_reported_queued() -> None:
    require_system("slurm")
    profile = f"doc-queued-{os.getpid()}"
    code, checks = doctor(profile, "--engines", "slurm", "--ip", "*", "--timeout", "3", "--no-mpi",
                          "--set", 'batch.extra_directives=["--begin=now+1hour"]', env=env_for("slurm"))
    job = checks["test-job"]
    assert job["status"] == "warn" and job["details"]["state"] == "pending", job
    assert job["details"]["reason"] == "BeginTime" and "cancelled" in job["result"]
    assert "--timeout" in job["fix"]
    assert checks["controller-reach"]["status"] == "skip"
    assert code == 0  # a busy queue does not stop `hpcpar start`; it only waits
    assert "waiting for slurm job" in checks["_stderr"]
    left = subprocess.run(["squeue", "--noheader", "--states=PENDING,RUNNING", f"--jobs={job['details']['job_id']}",
                           "--format=%T"], capture_output=True, text=True, timeout=30)
    assert left.stdout.strip() == "", left.stdout
    assert_left_nothing(profile)


@pytest.mark.timeout(120)
def test_a_held_sge_test_job_is_cancelled_and_reported_held() -> None:
    require_system("sge")
    profile = f"doc-held-{os.getpid()}"
    env = env_for("sge")
    code, checks = doctor(profile, "--engines", "sge", "--ip", "*", "--timeout", "3", "--no-mpi",
                          "--set", 'batch.extra_directives=["-h"]', env=env)
    job = checks["test-job"]
    assert job["status"] == "warn" and job["details"]["state"] == "held" and "cancelled" in job["result"], job
    assert "hold" in job["fix"] and code == 0
    left = subprocess.run(["qstat", "-u", "*"], capture_output=True, text=True, timeout=30, env=env).stdout
    assert not [line for line in left.splitlines()[2:] if line.split()[:1] == [job["details"]["job_id"]]]
    assert_left_nothing(profile)


@pytest.mark.timeout(120)
def test_a_rejected_test_job_fails_with_the_schedulers_words() -> None:
    require_system("slurm")
    profile = f"doc-rejected-{os.getpid()}"
    code, checks = doctor(profile, "--engines", "slurm", "--ip", "*", "--queue", "nosuchpartition", "--no-mpi",
                          env=env_for("slurm"))
    job = checks["test-job"]
    assert code == 1 and job["status"] == "fail", job
    assert "invalid partition" in job["result"].lower() and "hpcpar render" in job["fix"]
    assert_left_nothing(profile)


# ----- no batch system needed ---------------------------------------------------------------
@pytest.mark.timeout(60)
def test_files_other_users_can_read_fail_the_check() -> None:
    profile = f"doc-perm-{os.getpid()}"
    pd = ProfileDir.for_profile(profile, create=True)
    os.chmod(pd.path, 0o755)
    db = pd.path / "tasks.db"
    db.write_text("")
    os.chmod(db, 0o644)
    code, checks = doctor(profile, "--no-mpi")
    assert code == 1
    assert checks["profile-dir"]["status"] == "warn" and "0755" in checks["profile-dir"]["result"]
    assert checks["secret-files"]["status"] == "fail" and "tasks.db (0644)" in checks["secret-files"]["result"]
    assert f"chmod 600 {db}" in checks["secret-files"]["fix"]
    log = pd.log / "controller.log"
    log.write_text("started\n")
    os.chmod(log, 0o644)
    code, checks = doctor(profile, "--no-mpi")
    assert checks["log-files"]["status"] == "warn" and "controller.log, 0644" in checks["log-files"]["result"]
    os.chmod(pd.path, 0o700)  # behind a private directory the same file is shielded: a warning only
    code, checks = doctor(profile, "--no-mpi")
    assert code == 0 and checks["secret-files"]["status"] == "warn" and checks["profile-dir"]["status"] == "ok"
    os.chmod(db, 0o600)
    code, checks = doctor(profile, "--no-mpi")
    assert code == 0 and checks["secret-files"]["status"] == "ok"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600  # doctor only looks; it changes nothing


@pytest.mark.timeout(60)
def test_a_missing_scheduler_and_a_bad_setting_fail_with_the_fix(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}/usr/bin{os.pathsep}/bin")
    code, checks = doctor(f"doc-lsf-{os.getpid()}", "--engines", "lsf", "--no-mpi", env=env)
    assert code == 1
    sched = checks["scheduler-commands"]
    assert sched["status"] == "fail" and "bsub" in sched["result"] and "login node" in sched["fix"]
    assert checks["test-job"]["status"] == "skip"
    code, checks = doctor(f"doc-bad-{os.getpid()}", "--set", "batch.wallclock=1", "--no-mpi")
    assert code == 1 and checks["config"]["status"] == "fail" and "wallclock" in checks["config"]["result"]


@pytest.mark.timeout(60)
def test_local_only_doctor_checks_mpi_and_prints_a_table() -> None:
    from test_mpi import require_mpi

    require_mpi()
    done = subprocess.run(hpcpar_cmd("doctor", "--profile", f"doc-table-{os.getpid()}", "--engines", "mpi"),
                          capture_output=True, text=True, timeout=90, env=dict(os.environ, COLUMNS="250"))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "RESULT", "FIX"]
    mpi = next(line for line in lines if line.startswith("mpi "))
    assert "OK" in mpi and "2 ranks saw each other" in done.stdout
    assert "nothing found that would stop 'hpcpar start'" in done.stdout


@pytest.mark.timeout(90)
def test_ssh_on_host_is_checked() -> None:
    require_system("ssh")
    config = CI_ENV.get("HPCPAR_SSH_CONFIG", "/opt/hpcpar-ssh/ssh_config")
    host = CI_ENV.get("HPCPAR_CI_SSH_HOST", "testhost")
    profile = f"doc-ssh-{os.getpid()}"
    base = ("--no-mpi", "--set", f"ssh.config={config!r}")
    code, checks = doctor(profile, *base, "--on", host, "--set", f"ssh.python={sys.executable!r}")
    assert code == 0 and checks[f"ssh {host}"]["status"] == "ok" and "hpcpar" in checks[f"ssh {host}"]["result"]
    code, checks = doctor(profile, *base, "--on", "nosuchhost.invalid")
    assert code == 1 and checks["ssh nosuchhost.invalid"]["status"] == "fail"
    assert "nosuchhost.invalid" in checks["ssh nosuchhost.invalid"]["result"]


@pytest.mark.timeout(60)
def test_transport_row_follows_the_security_setting() -> None:
    profile = f"doc-transport-{os.getpid()}"
    code, checks = doctor(profile, "--no-mpi", "--ip", "*")
    assert checks["transport"]["status"] == "ok" and checks["transport"]["details"]["transport"] == "curve"
    code, checks = doctor(profile, "--no-mpi", "--ip", "127.0.0.1")
    assert checks["transport"]["details"]["transport"] == "hmac" and checks["transport"]["status"] == "ok"
    code, checks = doctor(profile, "--no-mpi", "--ip", "*", "--set", 'security.transport="hmac"')
    transport = checks["transport"]
    assert transport["status"] == "warn" and "unencrypted" in transport["result"] and "curve" in transport["fix"]
    assert code == 0  # works, only in clear
