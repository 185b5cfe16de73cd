"""The client's tunnel: ONE SSH connection, ONE forwarded port.

The client talks to the controller over a single socket, so one forwarded port
carries everything. The same connection fetches the connection file first.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import socket
import threading
import time
import weakref
from urllib.parse import urlsplit

from ..connection import ConnectionInfo
from .errors import ControllerNotRunning, SSHError
from .remote import RemoteConnection, fetch_client_info
from .session import Session, make_session
from .target import SSHOptions, SSHTarget

log = logging.getLogger("hpcpar.ssh")

_open_tunnels: weakref.WeakSet = weakref.WeakSet()


def probe_zmtp(port: int, timeout: float) -> bool:
    """True when a ZeroMQ peer answers on 127.0.0.1:port (its greeting starts with 0xFF).

    Through a forward, a refused or unreachable remote end shows up as the local
    connection being closed at once.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            data = s.recv(1)
            return data[:1] == b"\xff"
    except OSError:
        return False


class ClientTunnel:
    """A forwarded local port to a controller, and the session that carries it."""

    def __init__(self, session: Session, local_port: int, remote: tuple[str, int], source: str) -> None:
        self.session = session
        self.local_port = local_port
        self.remote = remote
        self.source = source
        self._lock = threading.Lock()
        self.closed = False
        _open_tunnels.add(self)

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.local_port}"

    def alive(self) -> bool:
        return not self.closed and self.session.alive()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        try:
            self.session.cancel(self.local_port)
        finally:
            self.session.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<ClientTunnel 127.0.0.1:{self.local_port} -> {self.remote[0]}:{self.remote[1]} via {self.session.description} ({state})>"


@atexit.register
def _close_all() -> None:
    for t in list(_open_tunnels):
        try:
            t.close()
        except Exception:
            pass


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise SSHError(f"cannot tunnel to {url!r}: expected tcp://HOST:PORT")
    return parts.hostname, parts.port


def open_tunnel_to(session: Session, info: ConnectionInfo, timeout: float) -> tuple[int, tuple[str, int]]:
    """Try the file's URLs in order, as the SSH server sees them; keep the first that answers."""
    per_url = max(1.0, timeout / max(1, len(info.urls)))
    tried = []
    for url in info.urls:
        host, port = _host_port(url)
        local = session.forward(host, port)
        deadline = time.monotonic() + per_url
        ok = False
        # A refused or unreachable address closes the forwarded connection at once;
        # a few tries cover a controller that is still binding.
        for attempt in range(3):
            if probe_zmtp(local, timeout=max(0.5, min(5.0, deadline - time.monotonic()))):
                ok = True
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.3 * (attempt + 1))
        if ok:
            return local, (host, port)
        session.cancel(local)
        tried.append(f"{host}:{port}")
    raise ControllerNotRunning(", ".join(tried))


def open_client_tunnel(
    server: str,
    *,
    profile: str | None = None,
    profile_dir: str | None = None,
    cluster_id: str | None = None,
    info: ConnectionInfo | None = None,
    source: str = "",
    options: SSHOptions | None = None,
    timeout: float = 30.0,
    session: Session | None = None,
) -> tuple[ConnectionInfo, str, ClientTunnel]:
    """Open one SSH connection to ``server``, read the cluster's client connection file
    (from the remote profile, unless ``info`` is given), forward one
    local port to the controller and return the rewritten info, its source and the tunnel.
    An already open ``session`` is used (and owned by the tunnel from then on)."""
    target = SSHTarget.parse(server)
    if session is None:
        session = make_session(target, options)
    session.open(timeout=max(5.0, timeout))
    try:
        if info is not None:
            remote = RemoteConnection(info, source, "", None)
        else:
            remote = fetch_client_info(session, profile=profile, profile_dir=profile_dir,
                                       cluster_id=cluster_id, timeout=max(10.0, timeout))
            info = remote.info
            source = f"{target}:{remote.path}"
        try:
            local, dest = open_tunnel_to(session, info, timeout=min(timeout, 15.0) if remote.pid_alive is False else timeout)
        except ControllerNotRunning as e:
            if remote.pid_alive is False:
                raise ControllerNotRunning(
                    f"the controller of {source} is not running (pid {info.controller_pid} is gone "
                    f"on {remote.host}); the connection file is left over from a stopped cluster. "
                    f"Start the cluster again on {target} ('hpcpar start --profile {info.profile}'), "
                    f"or remove the file"
                ) from None
            raise ControllerNotRunning(
                f"no controller answers at {e} as seen from {target} (connection file {source}): "
                f"the cluster is not running, or its controller listens on an address {target} "
                f"cannot reach (start it with --ip ADDRESS reachable from {target.host}). "
                f"Check with 'hpcpar list' on {target.host}"
            ) from None
        local_info = dataclasses.replace(
            info, urls=[f"tcp://127.0.0.1:{local}"], ssh=str(target),
            extra={**info.extra, "tunnel": {"server": str(target), "remote": f"{dest[0]}:{dest[1]}",
                                            "remote_file": remote.path}},
        )
        log.debug("tunnel 127.0.0.1:%d -> %s:%d via %s", local, dest[0], dest[1], target)
        return local_info, source, ClientTunnel(session, local, dest, source)
    except BaseException:
        session.close()
        raise
