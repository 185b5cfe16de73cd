"""Checks `hpcpar start` makes before anything starts, beyond what the config validates."""

from __future__ import annotations

import socket


def check_local_bind(ip: str, source: str) -> str | None:
    """Why a controller running on this machine could not listen on ``ip``, or None.

    The config check already refused what is not an address at all; this catches an
    address that belongs to another machine (the controller would die at start-up)."""
    if ip in ("", "*"):
        return None
    try:
        if ip in {name for _, name in socket.if_nameindex()}:
            return None  # an interface name: the controller binds to its address
    except OSError:
        pass
    host = ip.strip("[]")
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return (f"controller.ip {ip!r} (from {source}) does not resolve ({e.strerror}); use '*', "
                "127.0.0.1 or an address of this machine")
    errors = []
    for family, kind, proto, _, addr in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.bind(addr[:1] + (0,) + tuple(addr[2:]))
            return None
        except OSError as e:
            errors.append(e.strerror or str(e))
    return (f"controller.ip {ip!r} (from {source}) is not an address of this machine, where the "
            f"controller runs ({errors[0] if errors else 'cannot bind'}); use '*' (every interface), "
            "127.0.0.1, or one of this machine's addresses")
