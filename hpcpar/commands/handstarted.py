"""Controllers started by hand (``hpcpar controller``): a connection file, no state file.

``list``, ``status`` and ``stop`` all find them here, so they agree on which exist, whether
each still runs and, when one died, what the user should type (its connection files are
left behind: they name a pid that is gone).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class HandStarted:
    """What the connection file of a controller started by hand says, and whether it runs."""

    client_file: Path
    pid: int | None
    host: str  # where it runs, as it advertised itself
    alive: bool | None  # None: on another host and not answering here, so unknown


def is_controller(pid: int) -> bool:
    """``pid`` runs an hpcpar controller on this host (never trust a reused pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"hpcpar" in b" ".join(argv) and b"controller" in argv


def find(pd: Any, cluster_id: str) -> HandStarted | None:
    """The hand-started controller of this cluster, or None (started by ``hpcpar start``,
    only a job ledger, or nothing at all)."""
    from ..connection import ConnectionInfo
    from ..launchers.ledger import read_jobs

    path = pd.client_file(cluster_id)
    if pd.state_file(cluster_id).exists() or not path.exists() or read_jobs(pd, cluster_id):
        return None
    try:
        info = ConnectionInfo.load(path)
    except (OSError, ValueError):
        return HandStarted(path, None, "", None)
    pid = info.controller_pid
    if pid and is_controller(pid):
        alive: bool | None = True
    elif pid and _on_this_host(info.location, info.urls):
        alive = False
    else:
        alive = None  # elsewhere (a shared filesystem): ask it, do not guess
    return HandStarted(path, pid, info.location or "", alive)


def _on_this_host(location: str, urls: list[str]) -> bool:
    """The controller ran here: it said so, or it listened on loopback only."""
    if location in (socket.gethostname(), socket.getfqdn(), "localhost"):
        return True
    hosts = [u.rsplit(":", 1)[0].split("://")[-1] for u in urls]
    return bool(hosts) and all(h.startswith("127.") or h == "localhost" for h in hosts)


def where(pd: Any, cluster_id: str) -> str:
    return f"profile {pd.name!r}" + (f", cluster id {cluster_id!r}" if cluster_id else "")


def selector(pd: Any, cluster_id: str) -> str:
    """The options that name this cluster on a command line."""
    from ..paths import hpcpar_dir

    if pd.path.resolve() == (hpcpar_dir() / f"profile_{pd.name}").resolve():
        chosen = f"--profile {pd.name}"
    else:
        chosen = f"--profile-dir {pd.path}"
    return chosen + (f" --cluster-id {cluster_id}" if cluster_id else "")


def dead_message(pd: Any, cluster_id: str, hand: HandStarted) -> str:
    """Why a dead hand-started controller is listed, and the two ways out."""
    sel = selector(pd, cluster_id)
    return (f"the controller started by hand ({where(pd, cluster_id)}, pid {hand.pid} on this host) is not "
            f"running; its connection file {hand.client_file} is stale. Restart it with 'hpcpar controller "
            f"{sel} --restore' (and the options it had; its engines re-attach), or clean up with "
            f"'hpcpar stop {sel}'")


def remove_stale(pd: Any, cluster_id: str, hand: HandStarted) -> list[str]:
    """Remove the connection files (and Curve key file) a dead controller left; their names."""
    from .. import security

    removed = []
    for path in (pd.client_file(cluster_id), pd.engine_file(cluster_id)):
        if path.exists():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    key_file = pd.controller_key_file(cluster_id)
    if hand.pid and key_file.exists():
        security.remove_keys(key_file, hand.pid)
        if not key_file.exists():
            removed.append(key_file.name)
    return removed


def engine_count(hand: HandStarted, timeout: float = 3.0) -> int | None:
    """Engines registered with a live hand-started controller (None: it does not answer)."""
    from ..client import Client

    try:
        rc = Client(str(hand.client_file), timeout=timeout)
    except Exception:  # noqa: BLE001 - not answering is shown as unknown, not raised
        return None
    try:
        return len(rc.ids)
    finally:
        rc.close()
