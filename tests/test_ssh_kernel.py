"""A laptop client reaches an engine's bound kernel over its SSH connection
(Client(sshserver=...) against the CI sshd 'testhost'), driven by jupyter_client
and by a real `hpcpar console`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jupyter_client  # noqa: F401  (the test extra installs these; a missing one fails, as CI wants)
import jupyter_console  # noqa: F401
import pexpect
import pytest
from cluster_helpers import FAST_HEARTBEAT, hpcpar_cmd
from systems import require_system

import hpcpar
from hpcpar.cluster import Cluster

CI_CONFIG = "/opt/hpcpar-ssh/ssh_config"


def console_roundtrip(cmd: list[str], tmp_path, line: str, expected_out: str) -> None:
    """Run `hpcpar console` in a terminal: one input line, its Out[] (a regex), then quit keeping the kernel."""
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"), "IPYTHONDIR": str(tmp_path / "ipython"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "laptop-runtime"), "TERM": "dumb"}
    child = pexpect.spawn(cmd[0], cmd[1:], env=env, encoding="utf-8", timeout=60, dimensions=(40, 200))
    try:
        child.expect(r"hpcpar engine \d+ on ")
        child.expect(r"In \[\d+\]: ")
        child.sendline(line)
        child.expect(r"Out\[\d+\]: " + expected_out)
        child.expect(r"In \[\d+\]: ")
        child.sendline("quit(keep_kernel=True)")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before


@pytest.fixture()
def ssh_cluster(tmp_path, monkeypatch):
    require_system("ssh")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "engine-runtime"))  # the engines inherit it
    c = Cluster(n=2, profile_dir=tmp_path / "profile", cluster_id="", controller_args=FAST_HEARTBEAT)
    c.start_cluster_sync()
    try:
        c.wait_for_engines_sync(timeout=60, interactive=False)
        yield c
    finally:
        c.stop_cluster_sync()


@pytest.mark.parametrize("client", ["openssh", "paramiko"])
def test_kernel_forwarded_over_the_clients_ssh_connection(ssh_cluster, tmp_path, client):
    with hpcpar.Client(profile_dir=ssh_cluster.profile_dir.path, sshserver="testhost", ssh_config=CI_CONFIG,
                       paramiko=client == "paramiko", timeout=20) as rc:
        assert rc._tunnel is not None
        rc.wait_for_engines(2, timeout=30, interactive=False)
        rc[1].push({"pushed_over_ssh": 20}, block=True)
        local = str(tmp_path / "laptop" / "kernel.json")
        assert rc.kernel_connection_file(1, path=local) == local
        info = json.loads(open(local).read())
        remote_file = rc[1].apply_sync(hpcpar.bind_kernel)
        remote = json.loads(open(remote_file).read())
        assert info["ip"] == "127.0.0.1" and info["key"] == remote["key"]
        assert oct(os.stat(local).st_mode & 0o777) == "0o600"
        ports = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
        assert all(info[p] != remote[p] for p in ports)  # local ends of the forwards, not the engine's
        assert all(p in rc._tunnel.session.forwards for p in (info[n] for n in ports))
        n_forwards = len(rc._tunnel.session.forwards)
        again = json.loads(open(rc.kernel_connection_file(1, path=str(tmp_path / "again.json"))).read())
        assert again == info and len(rc._tunnel.session.forwards) == n_forwards  # nothing forwarded twice

        kc = jupyter_client.BlockingKernelClient(connection_file=local)
        kc.load_connection_file()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=30)
            assert kc.is_alive()  # heartbeats cross the forward too
            outputs: list[tuple[str, dict]] = []
            reply = kc.execute_interactive("print('over ssh', pushed_over_ssh)\nviewed = pushed_over_ssh + 1\nviewed",
                                           timeout=30, output_hook=lambda m: outputs.append((m["msg_type"], m["content"])))
            assert reply["content"]["status"] == "ok"
            assert "".join(c["text"] for t, c in outputs if t == "stream") == "over ssh 20\n"
            assert [c["data"]["text/plain"] for t, c in outputs if t == "execute_result"] == ["21"]
        finally:
            kc.stop_channels()
        assert rc[1].pull("viewed", block=True) == 21

        with pytest.raises(ValueError, match="no engine 7"):
            rc.kernel_connection_file(7)


def test_hpcpar_console_command(ssh_cluster, tmp_path):
    """`hpcpar console 0 --sshserver testhost`: the real jupyter console, through the forward."""
    with hpcpar.Client(profile_dir=ssh_cluster.profile_dir.path, timeout=20) as rc:
        rc[0].push({"pushed_here": "hello"}, block=True)
    cmd = hpcpar_cmd("console", "0", "--profile-dir", str(ssh_cluster.profile_dir.path), "--sshserver", "testhost",
                     "--ssh-config", CI_CONFIG, "--console-args=--simple-prompt")
    console_roundtrip(cmd, tmp_path, "pushed_here.upper()", "'HELLO'")
    assert os.listdir(tmp_path / "laptop-runtime") == []  # the command removes its local file

    bad = subprocess.run(hpcpar_cmd("console", "5", "--profile-dir", str(ssh_cluster.profile_dir.path)),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "no engine 5" in bad.stderr and "internal error" not in bad.stderr


# -- an engine on a compute node the laptop cannot reach ----------------------------------
# CI netns: the engine runs in hp-compute (10.200.0.2), the controller on the head
# (10.200.0.1), the client in hp-laptop, which reaches only the login node's sshd
# (10.200.0.66). The kernel's ports are forwarded over the client's one SSH connection.

COMPUTE_NS, LAPTOP_NS, COMPUTE_ADDR = "/run/netns/hp-compute", "/run/netns/hp-laptop", "10.200.0.2"
LOGIN = "root@10.200.0.66"

LAPTOP_KERNEL_SCRIPT = """
import json, socket, sys
import hpcpar, jupyter_client
rc = hpcpar.Client(profile_dir=sys.argv[1], sshserver=%(login)r, ssh_config=%(cfg)r, timeout=30)
path = rc.kernel_connection_file(1, ip=%(addr)r, path=sys.argv[2], allow_clear=True)  # CI's net: trusted
info = json.load(open(path))
out = {"ip": info["ip"]}
s = socket.socket(); s.settimeout(3)
try:
    s.connect((%(addr)r, 22)); out["direct"] = "reachable"
except OSError as e:
    out["direct"] = str(e)
kc = jupyter_client.BlockingKernelClient(connection_file=path)
kc.load_connection_file(); kc.start_channels(); kc.wait_for_ready(timeout=30)
texts = []
reply = kc.execute_interactive("import subprocess\\n"
                               "print(subprocess.run(['ip', '-o', '-4', 'addr'], capture_output=True, text=True).stdout)\\n"
                               "state['seen_from_laptop'] = True\\nstate['rank_data']",
                               timeout=30, output_hook=lambda m: texts.append(m["content"]))
out["status"] = reply["content"]["status"]
out["stdout"] = "".join(c.get("text", "") for c in texts)
out["result"] = [c["data"]["text/plain"] for c in texts if "data" in c]
out["alive"] = kc.is_alive()
kc.stop_channels()
rc.close()
print("RESULT " + json.dumps(out))
"""


def test_console_on_an_engine_the_laptop_cannot_reach(tmp_path):
    """The compute-node case, on a live MPI rank: `rc.kernel_connection_file(1, ip=<node address>)`
    and `hpcpar console 1 --ip <node address> --sshserver <login>` from the laptop."""
    for system in ("ssh", "netns", "netns-sshd"):
        require_system(system)
    pdir = tmp_path / "profile"
    c = Cluster(n=0, profile_dir=pdir, cluster_id="", controller_args=[*FAST_HEARTBEAT, "--ip", "10.200.0.1"])
    c.start_cluster_sync()
    from test_mpi import default_mpiexec, require_mpi

    require_mpi()
    # a 2-rank MPI job on the compute node; the console goes to rank 1
    engine = subprocess.Popen(["nsenter", f"--net={COMPUTE_NS}", str(default_mpiexec()), "-n", "2",
                               *hpcpar_cmd("engine", "--mpi", "--profile-dir", str(pdir), "--cluster-id", "")],
                              env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "compute-runtime")},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with hpcpar.Client(profile_dir=pdir, timeout=20) as rc:
            rc.wait_for_engines(2, timeout=60, interactive=False)
            rc[:].execute("state = {'rank_data': f'rank {mpi_rank} of {mpi_size}, live on the node'}", block=True)
        script = LAPTOP_KERNEL_SCRIPT % dict(login=LOGIN, cfg=CI_CONFIG, addr=COMPUTE_ADDR)
        r = subprocess.run(["nsenter", f"--net={LAPTOP_NS}", sys.executable, "-c", script, str(pdir),
                            str(tmp_path / "laptop" / "kernel.json")], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout.split("RESULT ", 1)[1])
        assert out["ip"] == "127.0.0.1" and "unreachable" in out["direct"].lower(), out  # only the forward gets there
        assert out["status"] == "ok" and out["alive"]
        assert f"inet {COMPUTE_ADDR}/" in out["stdout"]  # the cell ran on the compute node
        assert out["result"] == ["'rank 1 of 2, live on the node'"]

        # the same from a terminal, with the command docs/interactive.md gives
        cmd = ["nsenter", f"--net={LAPTOP_NS}",
               *hpcpar_cmd("console", "1", "--profile-dir", str(pdir), "--ip", COMPUTE_ADDR, "--allow-clear", "--sshserver", LOGIN,
                           "--ssh-config", CI_CONFIG, "--console-args=--simple-prompt")]
        console_roundtrip(cmd, tmp_path, "sorted(state), mpi_rank", r"\(\['rank_data', 'seen_from_laptop'\], 1\)")
    finally:
        engine.terminate()
        engine.wait(timeout=30)
        c.stop_cluster_sync()
