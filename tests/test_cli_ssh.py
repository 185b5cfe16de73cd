"""The SSH side of the command line, on the CI's real sshd hosts: the commands
`hpcpar start --on` prints work when pasted, a failing [ssh] prologue is an error that
names the line, and the host-key hint gives commands OpenSSH accepts."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap

from cluster_helpers import hpcpar_cmd
from systems import require_system

CI_CONFIG = "/opt/hpcpar-ssh/ssh_config"
HEAD = "10.200.0.1"  # the bridge in the root namespace, reachable from the login1 namespace


def test_host_key_hint_uses_openssh_syntax():
    from hpcpar.ssh.errors import UnknownHostKey, classify

    e = classify("alice@login.example.org:2222", "Host key verification failed.")
    assert isinstance(e, UnknownHostKey)
    assert "'ssh -p 2222 alice@login.example.org'" in str(e)
    assert "'ssh-keyscan -p 2222 login.example.org >> ~/.ssh/known_hosts'" in str(e)
    assert ":2222'" not in str(e)
    plain = str(classify("login", "Host key verification failed."))
    assert "'ssh login'" in plain and "'ssh-keyscan login >> ~/.ssh/known_hosts'" in plain
    denied = str(classify("bob@h:2200", "Permission denied (publickey)."))
    assert "'ssh-copy-id -p 2200 bob@h'" in denied


def _as_argv(printed: str) -> list[str]:
    """A printed `hpcpar ...` command, run with this interpreter."""
    argv = shlex.split(printed)
    assert argv[0] == "hpcpar"
    return [sys.executable, "-m", "hpcpar", *argv[1:]]


def test_commands_printed_by_start_on_work_when_pasted(tmp_path):
    require_system("ssh")
    pdir = tmp_path / "profile_pasted"
    start = subprocess.run(
        hpcpar_cmd("start", "--on", "testhost", "-n", "1", "--timeout", "60", "--ssh-config", CI_CONFIG,
                   "--remote-python", sys.executable, "--profile-dir", str(pdir)),
        capture_output=True, text=True, timeout=120)
    state = pdir / "run" / "cluster.json"
    try:
        assert start.returncode == 0, start.stderr + start.stdout
        line = next(s for s in start.stdout.splitlines() if s.startswith("cluster ready on testhost"))
        client_expr = line.split("Connect with ", 1)[1].split("; stop with ", 1)[0]
        stop_cmd = line.split("; stop with '", 1)[1].rstrip("'")
        for flag in ("--ssh-config", "--remote-python", "--profile-dir"):
            assert flag in stop_cmd, stop_cmd
        assert f"ssh_config={CI_CONFIG!r}" in client_expr
        code = f"import hpcpar\nrc = {client_expr}\nrc.wait_for_engines(1, timeout=30)\nprint(len(rc.ids))\nrc.close()"
        connected = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90)
        assert connected.returncode == 0 and connected.stdout.strip() == "1", connected.stderr
        stop = subprocess.run(_as_argv(stop_cmd), capture_output=True, text=True, timeout=120, env=os.environ)
        assert stop.returncode == 0, stop.stderr + stop.stdout
        assert not state.exists()
    finally:
        if state.exists():
            subprocess.run(hpcpar_cmd("stop", "--profile-dir", str(pdir)), timeout=90)


def test_failing_ssh_prologue_is_an_error_naming_the_line(tmp_path):
    require_system("ssh")
    require_system("netns")
    require_system("netns-sshd")
    pdir = tmp_path / "profile_prologue"
    pdir.mkdir()
    (pdir / "config.toml").write_text(textwrap.dedent(f"""
        [ssh]
        hosts = {{"login1" = 1}}
        config = "{CI_CONFIG}"
        profile_dir = "{tmp_path / 'remote'}"
        python = "{sys.executable}"
        prologue = ["true", "no_such_module_command load gcc"]
    """))
    r = subprocess.run(
        hpcpar_cmd("start", "--profile-dir", str(pdir), "--engines", "ssh", "-n", "1", "--ip", HEAD,
                   "--timeout", "60"),
        capture_output=True, text=True, timeout=120)
    try:
        assert r.returncode == 1, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
        assert "the [ssh] prologue line 'no_such_module_command load gcc' failed on login1 (exit 127)" in r.stderr
        assert "not found" in r.stderr  # the shell's own words come along
    finally:
        subprocess.run(hpcpar_cmd("stop", "--profile-dir", str(pdir)), capture_output=True, timeout=90)
    assert not (pdir / "run" / "cluster.json").exists()
