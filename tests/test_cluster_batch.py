"""`hpcpar start --engines SYSTEM` end to end on the real SLURM, Grid Engine and PBS syntax
(SLURM's qsub wrappers) that ci/setup.sh brings up: engines register and run tasks, the job
ledger and `hpcpar status --json` show the jobs, `hpcpar stop` leaves nothing in the queue,
also after the starting process was SIGKILLed; SLURM engines on the second node (inside a
network namespace) reach the controller over a non-loopback address; an invalid config
submits nothing. In CI (CI=true) a missing system fails these tests; elsewhere they skip.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cluster_helpers import hpcpar_cmd
from systems import CI_ENV, PBS_BIN, require_system

import hpcpar
from hpcpar.cluster import Cluster
from hpcpar.launchers.ledger import read_jobs
from hpcpar.launchers.process import ProcessRef
from hpcpar.paths import ProfileDir

# Fast polling and heartbeats, a short walltime: a test must never leave a job burning.
CONFIG = """
[controller]
ip = "*"
heartbeat_interval = 0.25
heartbeat_timeout = 2.0
[engine]
controller_timeout = 20.0
[batch]
walltime = "00:05:00"
poll_interval = 0.3
poll_max_interval = 1.0
"""


def make_profile(name: str, extra: str = "") -> ProfileDir:
    pd = ProfileDir.for_profile(f"{name}-{os.getpid()}", create=True)
    (pd.path / "config.toml").write_text(CONFIG + extra)
    return pd


def env_for(system: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("SGE_ROOT", "SGE_CELL"):
        if name in CI_ENV:
            env[name] = CI_ENV[name]
    if system == "pbs":
        env["PATH"] = f"{PBS_BIN}{os.pathsep}{env['PATH']}"
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(hpcpar_cmd(*args), capture_output=True, text=True, timeout=timeout, env=env)


def queued(system: str, job_ids: list[str], env: dict[str, str]) -> list[str]:
    """Lines the scheduler still shows for these jobs (finished or cancelled ones excluded)."""
    if system == "sge":
        out = subprocess.run(["qstat", "-u", "*"], capture_output=True, text=True, env=env, timeout=30).stdout
        return [line for line in out.splitlines()[2:] if line.split() and line.split()[0] in job_ids]
    out = subprocess.run(["squeue", "--noheader", "--format=%F %i %T"], capture_output=True, text=True,
                         timeout=30).stdout
    return [line for line in out.splitlines()
            if line.split()[0] in job_ids and line.split()[2] not in ("COMPLETED", "CANCELLED")]


def wait_gone(system: str, job_ids: list[str], env: dict[str, str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (left := queued(system, job_ids, env)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"still in the queue after hpcpar stop: {left}"


def wait_dead(pids: list[ProcessRef], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(p.alive() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(p.alive() for p in pids), "processes outlived hpcpar stop"


@pytest.fixture
def system_env(monkeypatch):
    """This process sees the system's commands too (job_states() asks the scheduler)."""

    def use(system: str) -> None:
        for name, value in env_for(system).items():
            if os.environ.get(name) != value:
                monkeypatch.setenv(name, value)

    return use


def start_use_stop(system: str, pd: ProfileDir, n: int, extra_args: tuple[str, ...] = ()) -> dict:
    """The whole life of a batch cluster through the CLI; returns what the engines reported."""
    env = env_for(system)
    args = ["--profile", pd.name]
    start = run(["start", *args, "--engines", system, "-n", str(n), "--daemonize", "--wait", "--timeout", "90",
                 *extra_args], env)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        assert f"{system} job" in start.stdout and "submitted" in start.stdout
        assert f"engines registered {n}/{n}" in start.stdout
        jobs = [r.job_id for r in read_jobs(pd)]
        assert len(jobs) == 1 and [r.role for r in read_jobs(pd)] == ["engines"]
        cluster = Cluster.from_file(pd.state_file())
        states = cluster.job_states()
        assert [(s["job_id"], s["system"], s["state"]) for s in states] == [(jobs[0], system, "running")]
        status = run(["status", *args, "--json"], env, timeout=60)
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        assert len(doc["engines"]) == n
        assert {(j["system"], j["role"]) for j in doc["jobs"]} == {("local", "controller"), (system, "engines")}
        with hpcpar.Client(profile=pd.name, timeout=30) as rc:
            rc.wait_for_engines(n, timeout=30, interactive=False)
            seen = rc[:].apply_sync(lambda: __import__("os").getpid())
            addrs = rc[:].apply_sync(lambda: __import__("hpcpar.netutil").netutil.interface_addresses())
            assert sum(rc.load_balanced_view().map_sync(lambda x: x * x, range(20))) == sum(x * x for x in range(20))
            info = {"pids": [ProcessRef.of(e["pid"]) for e in rc._engines.values()],
                    "hosts": [e.get("hostname") for e in rc._engines.values()], "engine_pids": seen, "addrs": addrs}
    except BaseException:
        run(["stop", *args], env, timeout=90)
        raise
    stop = run(["stop", *args], env, timeout=90)
    assert stop.returncode == 0, stop.stderr
    assert jobs[0] in stop.stdout
    wait_gone(system, jobs, env)
    assert read_jobs(pd) == [] and not pd.state_file().exists()
    wait_dead(info["pids"])
    return info


@pytest.mark.timeout(150)
def test_slurm_start_run_status_stop(system_env) -> None:
    require_system("slurm")
    system_env("slurm")
    start_use_stop("slurm", make_profile("slurm-cli"), 4)


@pytest.mark.timeout(150)
def test_sge_start_run_status_stop(system_env) -> None:
    require_system("sge")
    system_env("sge")
    start_use_stop("sge", make_profile("sge-cli"), 4)


@pytest.mark.timeout(150)
def test_pbs_syntax_start_run_status_stop(system_env) -> None:
    require_system("pbs")
    system_env("pbs")
    start_use_stop("pbs", make_profile("pbs-cli"), 4)


def secrets_of(pd: ProfileDir) -> set[str]:
    """The cluster key and any Curve secret key in the engines' connection info."""
    info = json.loads(pd.engine_file("").read_text())
    found = {info["key"]}
    found.update(v for k, v in info.items() if "secret" in k and isinstance(v, str) and v)
    return {s for s in found if len(s) >= 16}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("system", ["slurm", "sge"])
def test_job_scripts_left_in_the_profile_do_not_carry_the_key(system: str, system_env, tmp_path) -> None:
    """connection = "env" (the default): the scheduler is handed a private copy of the script
    (outside the profile, removed after submission); the profile never holds a file with the key,
    not even while the submit command runs, and the engines still register."""
    require_system(system)
    system_env(system)
    pd = make_profile(f"{system}-scrub")
    # The submit command, wrapped: at the moment it runs, look for the key in the profile.
    seen = tmp_path / "seen.jsonl"
    wrapper = tmp_path / "submit.py"
    wrapper.write_text(f"""#!{sys.executable}
import json, os, pathlib, sys
profile, secret_file = pathlib.Path({str(pd.path)!r}), pathlib.Path({str(pd.engine_file(""))!r})
info = json.loads(secret_file.read_text())
secrets = [v for k, v in info.items() if (k == "key" or "secret" in k) and isinstance(v, str) and len(v) >= 16]
leaks = [str(p) for p in profile.rglob("*") if p.is_file() and p.parent.name != "security"
         and any(s.encode() in p.read_bytes() for s in secrets)]
script = sys.argv[-1]
with open({str(seen)!r}, "a") as f:
    f.write(json.dumps({{"leaks": leaks, "script": script, "cwd": os.getcwd(),
                        "has_key": any(s in open(script).read() for s in secrets)}}) + "\\n")
os.execvp(sys.argv[1], sys.argv[1:])
""")
    wrapper.chmod(0o700)
    submit = "sbatch" if system == "slurm" else "qsub"
    config = pd.path / "config.toml"  # "env" is the default; said here so the test keeps its meaning
    config.write_text(config.read_text().replace("[engine]\n", '[engine]\nconnection = "env"\n')
                      + f'\n[{system}]\nsubmit_command = ["{wrapper}", "{submit}"]\n')
    env, args = env_for(system), ["--profile", pd.name]
    start = run(["start", *args, "--engines", system, "-n", "2", "--daemonize", "--wait", "--timeout", "90"], env)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        assert "engines registered 2/2" in start.stdout
        secrets = secrets_of(pd)
        scripts = [Path(r.script) for r in read_jobs(pd)]
        assert scripts and all(p.is_file() and p.is_relative_to(pd.path) for p in scripts)
        assert "HPCPAR_CONNECTION_INFO" in scripts[0].read_text()  # the line is there, its value is not
        leaks = [str(p) for p in pd.path.rglob("*") if p.is_file() and p.parent.name != "security"
                 and any(s.encode() in p.read_bytes() for s in secrets)]
        assert leaks == [], f"the cluster key is in {leaks}"
        at_submit = [json.loads(line) for line in seen.read_text().splitlines()]
        assert at_submit, "the wrapped submit command did not run"
        for entry in at_submit:
            assert entry["leaks"] == [], f"while submitting, the cluster key was in {entry['leaks']}"
            assert entry["has_key"] and not Path(entry["script"]).is_relative_to(pd.path), entry
            assert not Path(entry["script"]).exists(), "the private copy was not removed"
            assert Path(entry["cwd"]) == pd.run, entry  # the job's working directory is the profile's
        with hpcpar.Client(profile=pd.name, timeout=30) as rc:
            rc.wait_for_engines(2, timeout=30, interactive=False)
            assert rc[:].apply_sync(lambda: 7) == [7, 7]
    finally:
        stop = run(["stop", *args], env, timeout=90)
    assert stop.returncode == 0, stop.stderr


@pytest.mark.timeout(150)
def test_sigkilled_start_with_a_batch_controller_is_still_fully_stopped() -> None:
    """Controller and engines both SLURM jobs; `hpcpar start` (foreground) is SIGKILLed once
    the cluster is up; `hpcpar stop` from another process cancels both jobs."""
    require_system("slurm")
    pd = make_profile("killed")
    env = env_for("slurm")
    proc = subprocess.Popen(hpcpar_cmd("start", "--foreground", "--profile", pd.name, "--controller", "slurm", "--engines", "slurm",
                                       "-n", "2", "--timeout", "90"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    try:
        deadline = time.monotonic() + 100
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        assert any("controller job" in line for line in lines), "".join(lines)
        assert any("cluster ready" in line for line in lines), "".join(lines)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        records = read_jobs(pd)
        assert sorted(r.role for r in records) == ["controller", "engines"]
        jobs = [r.job_id for r in records]
        assert len(queued("slurm", jobs, env)) >= 2  # still there: nobody stopped them
    except BaseException:
        proc.kill()
        run(["stop", "--profile", pd.name], env, timeout=90)
        raise
    finally:
        proc.stdout.close()
    stop = run(["stop", "--profile", pd.name], env, timeout=90)
    assert stop.returncode == 0, stop.stderr
    wait_gone("slurm", jobs, env)
    assert read_jobs(pd) == [] and not pd.client_file().exists()


@pytest.mark.timeout(150)
def test_slurm_engines_on_the_network_namespace_node_reach_the_controller(system_env) -> None:
    require_system("slurm-netns")
    system_env("slurm")
    partition = CI_ENV.get("HPCPAR_SLURM_NETNS_PARTITION", "netns")
    node = CI_ENV.get("HPCPAR_SLURM_NETNS_NODE", "compute1")
    addr = CI_ENV.get("HPCPAR_SLURM_NETNS_ADDR", "10.200.0.2")
    pd = make_profile("netns")
    info = start_use_stop("slurm", pd, 2, ("--queue", partition))
    assert info["hosts"] == [node, node]
    # The engines' only non-loopback address is the namespace's: they reached the controller
    # (listening on every interface of the head node) over it, not over loopback.
    assert info["addrs"] == [[addr], [addr]]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("problem", [
    ["--set", "batch.wallclock=1"],            # unknown key
    ["--ip", "127.0.0.1"],                      # loopback controller, engines on other hosts
    ["--walltime", "soon"],                     # wrong value
    ["--set", "sge.cpus_per_engine=2"],         # impossible: SGE without a parallel environment
])
def test_an_invalid_config_submits_nothing(problem: list[str], tmp_path: Path) -> None:
    """No real system needed: a stand-in qsub/sbatch on PATH records any call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "submitted"
    for name in ("sbatch", "qsub"):
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\necho \"$0 $*\" >> {marker}\necho 1\n")
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    pd = ProfileDir.for_profile(f"invalid-{os.getpid()}", create=True)
    system = "sge" if problem[-1].startswith("sge.") else "slurm"
    r = run(["start", "--profile", pd.name, "--engines", system, "-n", "2", "--daemonize", "--ip", "*", *problem],
            env, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "nothing was started" in r.stderr or "pe in [sge]" in r.stderr, r.stderr
    assert not marker.exists(), marker.read_text()
    assert not pd.state_file().exists() and read_jobs(pd) == []
    assert not pd.client_file().exists()  # no controller either


def test_a_batch_cluster_needs_an_engine_count() -> None:
    pd = ProfileDir.for_profile(f"no-n-{os.getpid()}", create=True)
    r = run(["start", "--profile", pd.name, "--engines", "slurm", "--ip", "*"], dict(os.environ), timeout=60)
    assert r.returncode == 1 and "-n N" in r.stderr, r.stderr
    assert read_jobs(pd) == [] and not pd.state_file().exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
