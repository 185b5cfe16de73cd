"""SSH against real sshd's: a laptop client through ONE tunnel (network namespaces as
laptop / login / head hosts), engines started over SSH, start/stop --on, and every error.

CI hosts (ci/setup.sh): sshd on 127.0.0.1:2222/2223 (testhost, testhost2), sshd on
10.200.0.66:22 inside netns hp-login; netns hp-laptop reaches only 10.200.0.66.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cluster_helpers import FAST_HEARTBEAT, hpcpar_cmd
from systems import require_system

import hpcpar
from hpcpar.cluster import Cluster
from hpcpar.ssh import ControllerNotRunning, RemoteNotFound, SSHAuthError, UnknownHostKey

SSH_DIR = Path("/opt/hpcpar-ssh")
CI_CONFIG = str(SSH_DIR / "ssh_config")
CI_KEY = str(SSH_DIR / "id_ed25519")
LOGIN_LOG = SSH_DIR / "sshd_login.log"
LAPTOP_NS = "/run/netns/hp-laptop"
HEAD = "10.200.0.1"  # the bridge in the root namespace: reachable from login, not from the laptop
CLIENTS = ["openssh", "paramiko"]


@pytest.fixture()
def ssh_hosts():
    require_system("ssh")


@pytest.fixture()
def netns_hosts():
    require_system("ssh")
    require_system("netns")
    require_system("netns-sshd")


def _ssh_processes(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, timeout=10).stdout
    return [line for line in out.splitlines() if "ssh" in line and marker in line and "ps -eo" not in line]


def _head_cluster(tmp_path: Path, name: str, n: int = 1) -> Cluster:
    c = Cluster(n=n, profile_dir=tmp_path / f"profile_{name}", cluster_id="", controller_args=[*FAST_HEARTBEAT, "--ip", HEAD])
    c.start_cluster_sync()
    c.wait_for_engines_sync(timeout=60, interactive=False)
    c._client.close()
    c._client = None
    return c


# -- the laptop client ------------------------------------------------------------------

LAPTOP_SCRIPT = textwrap.dedent("""
    import json, socket, subprocess, sys
    import hpcpar
    out = {}
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((%(head)r, %(port)d)); out["direct"] = "reachable"
    except OSError as e:
        out["direct"] = str(e)
    rc = hpcpar.Client(profile_dir=%(pdir)r, sshserver="root@10.200.0.66", ssh_config=%(cfg)r,
                       paramiko=%(paramiko)r, timeout=30)
    out["urls"] = rc._info.urls
    out["remote"] = list(rc._tunnel.remote)
    out["squares"] = rc[:].apply_sync(lambda x: x * x, 7)
    out["lb"] = rc.load_balanced_view().map_sync(lambda x: x + 1, range(20))
    ss = subprocess.run(["ip", "netns", "exec", "hp-login", "ss", "-Htn", "state", "established",
                         "( sport = :22 )"], capture_output=True, text=True).stdout
    out["login_ssh_connections"] = [l for l in ss.splitlines() if "10.200.0.65" in l]
    rc.close()
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.parametrize("client", CLIENTS)
def test_laptop_reaches_controller_only_through_one_tunnel(netns_hosts, tmp_path, client):
    c = _head_cluster(tmp_path, f"laptop-{client}", n=2)
    try:
        info = json.loads(c.profile_dir.client_file().read_text())
        assert info["urls"] == [info["urls"][0]] and f"//{HEAD}:" in info["urls"][0]
        port = int(info["urls"][0].rsplit(":", 1)[1])
        script = LAPTOP_SCRIPT % dict(head=HEAD, port=port, pdir=str(c.profile_dir.path), cfg=CI_CONFIG,
                                      paramiko=client == "paramiko")
        before = LOGIN_LOG.read_text(errors="replace").count("Accepted publickey for root from 10.200.0.65")
        r = subprocess.run(["nsenter", f"--net={LAPTOP_NS}", sys.executable, "-c", script],
                           capture_output=True, text=True, timeout=90)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout.split("RESULT ", 1)[1])
        assert "unreachable" in out["direct"].lower(), out["direct"]  # no route from the laptop
        assert out["urls"][0].startswith("tcp://127.0.0.1:")
        assert out["remote"] == [HEAD, port]  # the controller's address as seen from login
        assert out["squares"] == [49, 49]
        assert out["lb"] == list(range(1, 21))
        assert len(out["login_ssh_connections"]) == 1, out["login_ssh_connections"]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            after = LOGIN_LOG.read_text(errors="replace").count("Accepted publickey for root from 10.200.0.65")
            if after > before:
                break
            time.sleep(0.1)
        assert after - before == 1  # the file fetch, the probe and all traffic: one SSH login
        assert not _ssh_processes("10.200.0.66")  # the tunnel closed with the client
    finally:
        c.stop_cluster_sync()


# -- engines over SSH ---------------------------------------------------------------------


def test_ssh_launcher_engines_register_run_and_stop(netns_hosts, tmp_path):
    pdir = tmp_path / "profile_sshl"
    pdir.mkdir()
    remote = tmp_path / "remote"
    (pdir / "config.toml").write_text(textwrap.dedent(f"""
        [ssh]
        hosts = {{"testhost" = 2, "login1" = 1, "root@127.0.0.1:2223" = 1}}
        config = "{CI_CONFIG}"
        profile_dir = "{remote}"
        env = ["HPCPAR_SSH_TEST=from config"]
        prologue = ["HPCPAR_PROLOGUE=ran; export HPCPAR_PROLOGUE"]
    """))
    env = {**os.environ, "HPCPAR_DIR": str(tmp_path)}
    start = subprocess.run(
        hpcpar_cmd("start", "--profile-dir", str(pdir), "--engines", "ssh", "-n", "4", "--ip", HEAD,
                   "--daemonize", "--wait", "--timeout", "60"),
        capture_output=True, text=True, timeout=90, env=env)
    state_file = pdir / "run" / "cluster.json"
    try:
        assert start.returncode == 0, start.stderr + start.stdout
        state = json.loads(state_file.read_text())
        procs = state["engine_sets"][0]["state"]["processes"]
        assert [p["host"] for p in procs] == ["testhost", "testhost", "login1", "root@127.0.0.1:2223"]
        assert all(p["pid"] > 1 and p["start_time"] for p in procs)
        # the key is on no command line, anywhere
        key = json.loads((pdir / "security" / "hpcpar-client.json").read_text())["key"]
        assert key not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout

        with hpcpar.Client(profile_dir=pdir, timeout=20) as rc:
            rc.wait_for_engines(4, timeout=30, interactive=False)

            def where():
                import os
                import socket

                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.connect(("10.200.0.1", 9))
                return os.environ["HPCPAR_SSH_TEST"], os.environ["HPCPAR_PROLOGUE"], s.getsockname()[0], os.getpid()

            got = rc[:].apply_sync(where)
        assert {g[0] for g in got} == {"from config"} and {g[1] for g in got} == {"ran"}
        assert "10.200.0.3" in {g[2] for g in got}  # the engine on login1 runs in hp-login
        assert sorted(g[3] for g in got) == sorted(p["pid"] for p in procs)

        listing = subprocess.run(hpcpar_cmd("logs", "--profile-dir", str(pdir), "--list"),
                                 capture_output=True, text=True, timeout=60, env=env)
        assert listing.returncode == 0, listing.stderr
        for p in procs:
            assert re.search(rf"{re.escape(p['host'])}\s+{p['pid']}\s+true", listing.stdout), listing.stdout
        log = subprocess.run(hpcpar_cmd("logs", "--profile-dir", str(pdir), "2"),
                             capture_output=True, text=True, timeout=60, env=env)
        assert "registered as engine" in log.stdout, log.stdout + log.stderr

        stop = subprocess.run(hpcpar_cmd("stop", "--profile-dir", str(pdir)),
                              capture_output=True, text=True, timeout=60, env=env)
        assert stop.returncode == 0, stop.stderr
        for p in procs:  # one pid namespace: /proc shows every "host"
            assert not Path(f"/proc/{p['pid']}").exists() or "Z" in Path(f"/proc/{p['pid']}/stat").read_text().split(")")[1][:3]
        assert not state_file.exists()
        assert not [line for line in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
                    if str(pdir) in line or str(remote) in line]
    finally:
        if state_file.exists():
            subprocess.run(hpcpar_cmd("stop", "--profile-dir", str(pdir)), timeout=60, env=env)


def test_ssh_launcher_config_errors():
    from hpcpar.config import ConfigError, load_config
    from hpcpar.launchers.base import LauncherError
    from hpcpar.launchers.ssh import SSHLauncher, _plan

    assert _plan({"a": 2, "b": 3}, 4) == [("a", 2), ("b", 2)]
    assert _plan({"a": 2, "b": 3}, 0) == [("a", 2), ("b", 3)]
    with pytest.raises(LauncherError, match="-n 9 engines asked, but \\[ssh\\] hosts give 5"):
        _plan({"a": 2, "b": 3}, 9)
    with pytest.raises(LauncherError, match="no hosts"):
        _plan({}, 1)
    with pytest.raises(ConfigError, match="engine count of 'node1' must be a whole number"):
        load_config(overrides={"ssh.hosts": {"node1": 0}})
    cfg = load_config(overrides={"ssh.hosts": {"node1": 4, "user@node2:2222": 2}})
    launcher = SSHLauncher.from_config("engines", 6, cfg)
    assert SSHLauncher.from_dict(launcher.to_dict()).options["hosts"] == {"node1": 4, "user@node2:2222": 2}
    script = launcher.start_script("node1", 2, 0, ["python", "-m", "hpcpar", "engine"], '{"key": "SECRET"}')
    assert "HPCPAR_CONNECTION_INFO=" in script and "nohup python -m hpcpar engine" in script
    assert "SECRET" not in script.split("HPCPAR_CONNECTION_INFO=")[0]


# -- start / stop on the login node -------------------------------------------------------


def test_start_on_and_stop_on(ssh_hosts, tmp_path):
    pdir = tmp_path / "profile_onlogin"
    common = ["--ssh-config", CI_CONFIG, "--remote-python", sys.executable, "--profile-dir", str(pdir)]
    r = subprocess.run(hpcpar_cmd("start", "--on", "testhost", "-n", "2", "--timeout", "60",
                                  "--set", "controller.heartbeat_timeout=7.5", *common),
                       capture_output=True, text=True, timeout=90)
    try:
        assert r.returncode == 0, r.stderr + r.stdout
        assert "cluster ready on testhost: 2 engines" in r.stdout
        check = subprocess.run(hpcpar_cmd("connect", "testhost", "--ssh-config", CI_CONFIG,
                                          "--remote-profile-dir", str(pdir), "--check"),
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and "2 engines" in check.stdout, check.stderr
        state = json.loads((pdir / "run" / "cluster.json").read_text())
        pids = [p["pid"] for s in state["engine_sets"] for p in s["state"]["processes"]]
        pids += [p["pid"] for p in state["controller"]["state"]["processes"]]
        # settings given on the laptop reach the remote start
        controller_argv = Path(f"/proc/{state['controller']['state']['processes'][0]['pid']}/cmdline").read_bytes()
        assert b"--heartbeat-timeout\x007.5" in controller_argv
    finally:
        stop = subprocess.run(hpcpar_cmd("stop", "--on", "testhost", *common), capture_output=True,
                              text=True, timeout=90)
    assert stop.returncode == 0, stop.stderr
    assert not (pdir / "run" / "cluster.json").exists()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{p}").exists() for p in pids)
    assert not _ssh_processes("testhost")



def _slurm_queue(job_ids: list[str]) -> list[str]:
    out = subprocess.run(["squeue", "--noheader", "--format=%F %i %T"], capture_output=True, text=True,
                         timeout=30).stdout
    return [line for line in out.splitlines()
            if line.split()[0] in job_ids and line.split()[2] not in ("COMPLETED", "CANCELLED")]


@pytest.mark.timeout(60)
def test_start_on_and_stop_on_cancels_the_remote_slurm_jobs(ssh_hosts, tmp_path):
    """`hpcpar start --on testhost --engines slurm`: the login host submits the batch job and
    the engines work through the tunnel; `hpcpar stop --on testhost` cancels the job there
    (ipyparallel's equivalent leaves it behind, its issue #211)."""
    require_system("slurm")
    from hpcpar.launchers.ledger import read_jobs
    from hpcpar.launchers.process import ProcessRef
    from hpcpar.paths import ProfileDir

    pdir = tmp_path / "profile_onslurm"
    pdir.mkdir()
    (pdir / "config.toml").write_text(
        "[controller]\nheartbeat_interval = 0.25\nheartbeat_timeout = 2.0\n"
        '[batch]\nwalltime = "00:05:00"\npoll_interval = 0.3\npoll_max_interval = 1.0\n'
    )
    common = ["--ssh-config", CI_CONFIG, "--remote-python", sys.executable, "--profile-dir", str(pdir)]
    jobs: list[str] = []
    pids: list[ProcessRef] = []
    try:
        r = subprocess.run(hpcpar_cmd("start", "--on", "testhost", "--engines", "slurm", "-n", "2", "--ip", "*",
                                      "--timeout", "30", *common),
                           capture_output=True, text=True, timeout=40)
        jobs = [j.job_id for j in read_jobs(ProfileDir(pdir))]
        assert r.returncode == 0, r.stderr + r.stdout
        assert "cluster ready on testhost: 2 engines" in r.stdout
        assert len(jobs) == 1 and _slurm_queue(jobs), (jobs, r.stdout)
        with hpcpar.Client(profile_dir=str(pdir), sshserver="testhost", ssh_config=CI_CONFIG, timeout=15) as rc:
            assert rc._tunnel is not None  # the client reached the controller through the tunnel
            rc.wait_for_engines(2, timeout=15, interactive=False)
            env = rc[:].apply_sync(lambda: __import__("os").environ.get("SLURM_ARRAY_JOB_ID"))
            assert env == jobs * 2  # both engines are tasks of the remote batch (array) job
            assert rc.load_balanced_view().map_sync(lambda x: x * x, range(10)) == [x * x for x in range(10)]
            pids = [ProcessRef.of(e["pid"]) for e in rc._engines.values()]
        state = json.loads((pdir / "run" / "cluster.json").read_text())
        pids += [ProcessRef.of(p["pid"]) for p in state["controller"]["state"]["processes"]]
    finally:
        stop = subprocess.run(hpcpar_cmd("stop", "--on", "testhost", *common), capture_output=True,
                              text=True, timeout=40)
    assert stop.returncode == 0, stop.stderr
    assert jobs[0] in stop.stdout, stop.stdout
    assert not (pdir / "run" / "cluster.json").exists()
    deadline = time.monotonic() + 15
    while (left := _slurm_queue(jobs)) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not left, f"still in the queue after hpcpar stop --on: {left}"
    while any(p.alive() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(p.alive() for p in pids), "engine or controller processes outlived hpcpar stop --on"
    assert not _ssh_processes("testhost")

# -- ssh config: ControlMaster and ProxyJump ----------------------------------------------


def test_reuses_a_live_controlmaster_and_honours_proxyjump(ssh_hosts, tmp_path):
    c = Cluster(n=1, profile_dir=tmp_path / "profile_cm", cluster_id="", controller_args=FAST_HEARTBEAT)
    c.start_cluster_sync()
    c.wait_for_engines_sync(timeout=60, interactive=False)
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="hpcm", dir="/tmp"))  # unix socket paths are short
    control = short / "cm-%C"
    cfg = tmp_path / "ssh_config"
    cfg.write_text(textwrap.dedent(f"""
        Include {CI_CONFIG}
        Host jumped
            HostName 127.0.0.1
            Port 2223
            ProxyJump testhost
        Host muxed
            HostName 127.0.0.1
            Port 2222
            ControlMaster auto
            ControlPath {control}
        Host jumped muxed
            User root
            IdentityFile {CI_KEY}
            IdentitiesOnly yes
            BatchMode yes
            StrictHostKeyChecking no
            UserKnownHostsFile /dev/null
            LogLevel ERROR
    """))
    master = subprocess.Popen(["ssh", "-F", str(cfg), "-o", "ControlMaster=yes", "-N", "muxed"],
                              stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not list(short.glob("cm-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        with hpcpar.Client(profile_dir=c.profile_dir.path, sshserver="muxed", ssh_config=str(cfg), timeout=20) as rc:
            assert rc._tunnel.session.reused_master
            assert rc[:].apply_sync(lambda: 5) == [5]
        assert master.poll() is None  # the user's master is left running ...
        fwd = subprocess.run(["ssh", "-F", str(cfg), "-O", "check", "muxed"], capture_output=True, timeout=10)
        assert fwd.returncode == 0
        with hpcpar.Client(profile_dir=c.profile_dir.path, sshserver="jumped", ssh_config=str(cfg), timeout=20) as rc:
            assert rc[:].apply_sync(lambda: 6) == [6]
        with hpcpar.Client(profile_dir=c.profile_dir.path, sshserver="jumped", ssh_config=str(cfg), timeout=20,
                           paramiko=True) as rc:
            assert rc[:].apply_sync(lambda: 7) == [7]
        assert not _ssh_processes("jumped")
    finally:
        master.terminate()
        master.wait(timeout=10)
        c.stop_cluster_sync()
        import shutil

        shutil.rmtree(short, ignore_errors=True)


# -- errors ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def error_setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("ssh-errors")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "wrong")], check=True, timeout=30)
    (d / "known_hosts").write_text("")
    (d / "config").write_text(textwrap.dedent(f"""
        Include {CI_CONFIG}
        Host strict
            HostName 127.0.0.1
            Port 2222
            User root
            IdentityFile {CI_KEY}
            IdentitiesOnly yes
            BatchMode yes
            StrictHostKeyChecking yes
            UserKnownHostsFile {d / "known_hosts"}
            GlobalKnownHostsFile /dev/null
        Host wrongkey
            HostName 127.0.0.1
            Port 2222
            User root
            BatchMode yes
            StrictHostKeyChecking no
            UserKnownHostsFile /dev/null
            LogLevel ERROR
    """))
    stale = d / "profile_stale"
    hpcpar.connection.ConnectionInfo(key="ab" * 32, urls=["tcp://127.0.0.1:1"], role="client", profile="stale",
                                     controller_pid=2**22 + 7, location=os.uname().nodename).write(
        stale / "security" / "hpcpar-client.json")
    (d / "profile_empty").mkdir()
    return d


@pytest.mark.parametrize("client", CLIENTS)
def test_errors_name_the_fix(ssh_hosts, error_setup, client):
    d = error_setup
    common = dict(ssh_config=str(d / "config"), paramiko=client == "paramiko", timeout=5)
    with pytest.raises(UnknownHostKey, match=r"host key of .* is not known.*ssh-keyscan"):
        hpcpar.Client(sshserver="strict", profile_dir=d / "profile_stale", **common)
    with pytest.raises(SSHAuthError, match=r"refused the key .*wrong.*sshkey=/--key.*ssh-copy-id"):
        hpcpar.Client(sshserver="wrongkey", sshkey=str(d / "wrong"), profile_dir=d / "profile_stale", **common)
    with pytest.raises(RemoteNotFound, match=r"profile 'nosuchprofile' does not exist on testhost.*hpcpar start --profile nosuchprofile"):
        hpcpar.Client(sshserver="testhost", profile="nosuchprofile", **common)
    with pytest.raises(RemoteNotFound, match=r"no cluster is running in profile directory .*profile_empty on testhost.*hpcpar start"):
        hpcpar.Client(sshserver="testhost", profile_dir=d / "profile_empty", **common)
    with pytest.raises(ControllerNotRunning, match=r"is not running \(pid \d+ is gone.*Start the cluster again"):
        hpcpar.Client(sshserver="testhost", profile_dir=d / "profile_stale", **common)
    assert not _ssh_processes("hpcpar-ssh-")  # failed attempts leave no ssh behind


def test_cli_connect_reports_errors(ssh_hosts, error_setup):
    r = subprocess.run(hpcpar_cmd("connect", "testhost", "--ssh-config", str(error_setup / "config"),
                                  "--profile", "nosuchprofile", "--check"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "hpcpar connect: error: profile 'nosuchprofile' does not exist on testhost" in r.stderr


def test_server_spec_parsing():
    from hpcpar.ssh import SSHTarget

    assert SSHTarget.parse("user@node2:2222") == SSHTarget("node2", "user", 2222)
    assert SSHTarget.parse("login") == SSHTarget("login")
    assert str(SSHTarget.parse("u@h:22")) == "u@h:22"
    with pytest.raises(ValueError, match="user@host:port"):
        SSHTarget.parse("a b")
    with pytest.raises(ValueError, match="sshserver="):
        hpcpar.Client(sshkey="/nonexistent", profile="x")
