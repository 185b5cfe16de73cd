"""SSH: the hosts `hpcpar start --on HOST` (and the ssh engine launcher) would use
answer without a prompt, and their Python has hpcpar."""

from __future__ import annotations

import shlex
import stat
import sys
from pathlib import Path

from ..config import Config
from ..error import HpcparError
from .report import FAIL, OK, SKIP, WARN, Check

VERSION = "import sys, hpcpar; print('HPCPAR-SSH', hpcpar.__version__, sys.version.split()[0])"


def ssh_hosts(config: Config, on: str | None) -> list[tuple[str, str]]:
    """(host, why it is checked): --on first, then [ssh] hosts when engines = "ssh"."""
    hosts: list[tuple[str, str]] = []
    if on:
        hosts.append((on, "--on"))
    if config["cluster.engines"] == "ssh":
        hosts += [(h, "[ssh] hosts") for h in (config.get("ssh.hosts") or {}) if h not in {x for x, _ in hosts}]
    return hosts


def _file_checks(config: Config) -> list[Check]:
    rows = []
    for key in ("ssh.config", "ssh.key"):
        value = config.get(key) or ""
        if not value:
            continue
        path = Path(value).expanduser()
        if not path.is_file():
            rows.append(Check("ssh-files", FAIL, f"{key} = {value!r} does not exist",
                              f"fix {key} in the profile's config.toml"))
        elif key == "ssh.key" and stat.S_IMODE(path.stat().st_mode) & 0o077:
            rows.append(Check("ssh-files", WARN, f"{value} is readable by others "
                              f"({stat.S_IMODE(path.stat().st_mode):04o}); ssh refuses such keys",
                              f"chmod 600 {shlex.quote(str(path))}"))
    return rows


def ssh_checks(config: Config, on: str | None, timeout: float = 30.0) -> list[Check]:
    hosts = ssh_hosts(config, on)
    if not hosts:
        return [Check("ssh", SKIP, "no --on host given and engines are not \"ssh\"",
                      "pass --on USER@HOST to check the host 'hpcpar start --on' would use")]
    from ..ssh.session import make_session
    from ..ssh.target import SSHOptions

    rows = _file_checks(config)
    section = config.section("ssh")
    options = SSHOptions(key=section.get("key") or None, config=section.get("config") or None,
                         client=section.get("client") or "auto", extra=list(section.get("options") or []),
                         connect_timeout=timeout)
    python = config.get("ssh.python") or ("python3" if on else "")
    for host, why in hosts:
        name = f"ssh {host}"
        try:
            session = make_session(host, options)
            try:
                session.open(timeout=timeout)
                remote = python or sys.executable
                result = session.run(f"{shlex.quote(remote)} -c {shlex.quote(VERSION)}", timeout=timeout)
            finally:
                session.close()
        except (HpcparError, OSError, ValueError) as e:
            rows.append(Check(name, FAIL, f"{why}: {e}",
                              "make 'ssh HOST true' work without a prompt (key, known_hosts, ssh_config); "
                              "see docs/ssh.md"))
            continue
        line = next((ln for ln in result.stdout.splitlines() if ln.startswith("HPCPAR-SSH")), "")
        if result.rc != 0 or not line:
            rows.append(Check(name, FAIL, f"{why}: connected, but {remote} -c 'import hpcpar' failed: "
                              + (result.stderr.strip().splitlines() or ["no output"])[-1],
                              "install hpcpar on that host, or set [ssh] python (--remote-python) to a Python "
                              "that has it"))
            continue
        _, version, pyver = line.split()[:3]
        rows.append(Check(name, OK, f"{why}: connected; hpcpar {version}, Python {pyver} ({remote})"))
    return rows
