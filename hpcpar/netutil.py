"""Addresses: which IPs this host can advertise to engines and clients."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

_SIOCGIFADDR = 0x8915
WILDCARDS = ("*", "0.0.0.0", "")


def interface_addresses() -> list[str]:
    """IPv4 addresses of every interface that is up, loopback excluded."""
    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _index, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue  # no IPv4 address on this interface
            addr = socket.inet_ntoa(packed[20:24])
            if not ipaddress.ip_address(addr).is_loopback and addr not in found:
                found.append(addr)
    return found


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return ip == "localhost"


def bind_address(ip: str) -> str:
    return "*" if ip in WILDCARDS else ip


def advertised_addresses(ip: str) -> list[str]:
    """Addresses to write into connection files for a socket bound to ``ip``."""
    if ip in WILDCARDS:
        return [*interface_addresses(), "127.0.0.1"]
    return [ip]
