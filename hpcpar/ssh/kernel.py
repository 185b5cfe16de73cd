"""An engine's bound kernel (``bind_kernel``), reached from the client's machine.

``rc.kernel_connection_file(3)`` binds engine 3's kernel and, when the client
tunnels over SSH (``Client(sshserver=...)``), forwards the kernel's five ports
over that same SSH connection and writes a local connection file pointing at
them: ``jupyter console --existing <file>`` then works on the laptop. Without
a tunnel the engine's own file is returned (same host or shared filesystem).
"""

from __future__ import annotations

import json
import os
import socket
import weakref
from typing import Any

PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
WILDCARDS = ("0.0.0.0", "*", "", "::")
# per tunnel: (host, remote port) -> local port, so asking again forwards nothing new
_forwarded: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def engine_kernel_info(ip: str = "127.0.0.1", allow_clear: bool = False) -> dict:
    """Runs on the engine: bind its kernel; the connection info, its path and the host."""
    from ..engine.kernel import bind_kernel

    path = bind_kernel(ip, allow_clear)
    with open(path) as f:
        info = json.load(f)
    return {"info": info, "path": path, "host": socket.gethostname()}


def _write_private(path: str, info: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=1)


def kernel_connection_file(client: Any, engine_id: int, path: str | None = None, ip: str = "127.0.0.1",
                           allow_clear: bool = False) -> str:
    """Bind engine ``engine_id``'s kernel; a connection file usable on this machine.

    Through an SSH tunnel the ports are forwarded over the client's SSH
    connection (they close with the client) and the local file is written at
    ``path`` (default: Jupyter's runtime directory here). ``ip`` is what the
    engine binds: keep 127.0.0.1 when the engine runs on the SSH server itself;
    give an address the SSH server can reach when it runs on another node (in a curve
    cluster that takes ``allow_clear=True``: the kernel's traffic is not encrypted).
    """
    if engine_id not in client.ids:
        raise ValueError(f"no engine {engine_id!r} in this cluster; its engines are {client.ids}")
    bound = client[engine_id].apply_sync(engine_kernel_info, ip, allow_clear)
    tunnel = getattr(client, "_tunnel", None)
    if tunnel is None:
        return bound["path"]
    remote = bound["info"]
    host = bound["host"] if remote["ip"] in WILDCARDS else remote["ip"]
    local = dict(remote, ip="127.0.0.1")
    known = _forwarded.setdefault(tunnel, {})
    for name in PORTS:
        dest = (host, int(remote[name]))
        if dest not in known or known[dest] not in tunnel.session.forwards:
            known[dest] = tunnel.session.forward(*dest)
        local[name] = known[dest]
    if path is None:
        from jupyter_core.paths import jupyter_runtime_dir

        path = os.path.join(jupyter_runtime_dir(), f"kernel-hpcpar-ssh-engine-{engine_id}-{os.getpid()}.json")
    _write_private(path, local)
    return path
