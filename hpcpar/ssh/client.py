"""What ``Client(sshserver=...)`` calls: options from the arguments, then from the
profile's ``[ssh]`` config; the connection file from the remote profile, or from a
local file when one is named."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..connection import ConnectionInfo
from .target import SSHOptions
from .tunnel import ClientTunnel, open_client_tunnel


def ssh_options_from_config(profile: str | None, **given: Any) -> SSHOptions:
    """SSHOptions: explicit values win over the local profile's [ssh] section."""
    cfg: dict[str, Any] = {}
    try:
        from ..config import load_config

        cfg = load_config(profile).section("ssh")
    except Exception:  # no config layer or an unrelated config problem: defaults
        cfg = {}
    client = given.get("client")
    if client is None:
        paramiko = given.get("paramiko")
        client = {True: "paramiko", False: "openssh"}.get(paramiko, None) if paramiko is not None else None
    return SSHOptions(
        key=given.get("key") or cfg.get("key") or None,
        config=given.get("config") or cfg.get("config") or None,
        password=given.get("password"),
        client=client or cfg.get("client") or "auto",
        extra=list(cfg.get("options") or []),
    )


def tunnel_for_client(
    sshserver: str | None,
    sshkey: str | None,
    ssh_kwargs: dict[str, Any],
    connection_info: Any,
    url_file: Any,
    profile: str | None,
    profile_dir: Any,
    cluster_id: str | None,
    timeout: float,
) -> tuple[ConnectionInfo, str, ClientTunnel]:
    options = ssh_options_from_config(
        profile, key=sshkey, config=ssh_kwargs.get("ssh_config"), password=ssh_kwargs.get("password"),
        paramiko=ssh_kwargs.get("paramiko"),
    )
    info: ConnectionInfo | None = None
    source = ""
    if isinstance(connection_info, dict):
        info, source = ConnectionInfo.from_dict(connection_info, "connection_info dict"), "connection_info dict"
    elif (connection_info or url_file) is not None:
        path = Path(os.fspath(connection_info or url_file)).expanduser()
        info, source = ConnectionInfo.load(path), str(path)
    server = sshserver or (info.ssh if info is not None else None)
    if not server:
        raise ValueError(
            "sshkey= needs sshserver='user@login-node' (the host to tunnel through), "
            "or a connection file whose 'ssh' field names it"
        )
    return open_client_tunnel(
        server,
        profile=profile,
        profile_dir=os.fspath(profile_dir) if profile_dir is not None else None,
        cluster_id=cluster_id,
        info=info,
        source=source,
        options=options,
        timeout=timeout,
    )
