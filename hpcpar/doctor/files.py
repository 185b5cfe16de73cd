"""Files and transport: the profile directory is private, the files holding the cluster
key or signed requests (connection files, tasks.db*) cannot be read by other users,
and which transport protects the traffic."""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

from ..config import Config
from ..netutil import is_loopback
from ..paths import ProfileDir
from .report import FAIL, OK, WARN, Check


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _open_to_others(path: Path) -> bool:
    return bool(_mode(path) & 0o077)


def secret_files(pd: ProfileDir) -> list[Path]:
    """Files whose content lets a reader run code as the owner: the key, or signed requests."""
    found = sorted(pd.security.glob("*.json")) if pd.security.is_dir() else []
    found += sorted(p for p in pd.path.glob("tasks*.db*") if p.is_file())
    return found


def permission_checks(pd: ProfileDir) -> list[Check]:
    """profile-dir (0700, writable, ours) and secret-files (0600)."""
    q = shlex.quote(str(pd.path))
    if not pd.path.exists():
        return [Check("profile-dir", OK, f"{pd.path} does not exist yet; 'hpcpar start' creates it"),
                Check("secret-files", OK, "no connection files or task database yet")]
    rows: list[Check] = []
    if not os.access(pd.path, os.W_OK | os.X_OK):
        rows.append(Check("profile-dir", FAIL, f"{pd.path} is not writable by you",
                          f"fix the ownership of {q}, or use another profile (--profile) or HPCPAR_DIR"))
    elif pd.path.stat().st_uid != os.getuid():
        rows.append(Check("profile-dir", WARN, f"{pd.path} belongs to uid {pd.path.stat().st_uid}, not you",
                          "use a profile of your own (--profile, or HPCPAR_DIR)"))
    private = not _open_to_others(pd.path)
    if not rows:
        mode = f"{_mode(pd.path):04o}"
        rows.append(Check("profile-dir", OK if private else WARN, f"{pd.path} is {mode}",
                          "" if private else f"chmod 700 {q}: other users can read its logs and job scripts"))
    logs = sorted(p for p in pd.log.glob("*") if p.is_file()) if pd.log.is_dir() else []
    open_logs = [p for p in logs if _open_to_others(p)]
    if open_logs and not private:
        rows.append(Check("log-files", WARN, f"{len(open_logs)} of {len(logs)} log file(s) in {pd.log} are "
                          f"readable by others (e.g. {open_logs[0].name}, {_mode(open_logs[0]):04o})",
                          f"chmod 600 {shlex.quote(str(pd.log))}/*"))
    exposed = [p for p in secret_files(pd) if _open_to_others(p)]
    if not exposed:
        n = len(secret_files(pd))
        rows.append(Check("secret-files", OK, f"{n} file(s) with the cluster key or signed requests, all 0600"
                          if n else "no connection files or task database yet"))
    else:
        names = ", ".join(f"{p.name} ({_mode(p):04o})" for p in exposed)
        fix = "chmod 600 " + " ".join(shlex.quote(str(p)) for p in exposed)
        # Behind a 0700 directory nobody else can open them; otherwise anyone can run code as you.
        rows.append(Check("secret-files", WARN if private else FAIL,
                          f"readable by others: {names}" + (" (the 0700 directory still shields them)"
                                                            if private else ": any local user can replay or "
                                                            "sign tasks as you"),
                          fix if private else f"{fix}; chmod 700 {q}"))
    return rows


def effective_transport(config: Config) -> tuple[str, str]:
    """(the transport `hpcpar start` would use, why it cannot) for this config."""
    from ..security import TransportError, resolve_transport

    try:
        return resolve_transport(config.get("security.transport") or "auto", config["controller.ip"]), ""
    except TransportError as e:
        return "", str(e)


def transport_check(config: Config) -> Check:
    """The transport [security] transport selects for this controller address, and whether
    this host's libzmq can provide it."""
    ip = config["controller.ip"]
    choice = config.get("security.transport") or "auto"
    source = config.source_of("security.transport")
    effective, problem = effective_transport(config)
    if problem:
        return Check("transport", FAIL, f"{choice} (from {source}): {problem}",
                     "install pyzmq from PyPI (its wheels include libsodium), or set transport = \"hmac\" "
                     "in [security] (only on a network you trust)")
    how = f"transport = {choice!r} ({source})"
    if effective == "curve":
        return Check("transport", OK, f"{how}: curve, encrypted and authenticated, for a controller on {ip}",
                     details={"transport": effective})
    if is_loopback(ip):
        return Check("transport", OK, f"{how}: hmac, signed messages, for a controller on {ip} only",
                     details={"transport": effective})
    return Check("transport", WARN, f"{how}: hmac while the controller listens on {ip}: traffic crosses the "
                 "network unencrypted", "set transport = \"curve\" (or \"auto\") in [security] of the "
                 "profile's config.toml", {"transport": effective})
