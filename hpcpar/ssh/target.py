"""``[user@]host[:port]`` and the options every SSH connection of hpcpar shares."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TARGET = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:@\s]+)(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class SSHTarget:
    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> SSHTarget:
        m = _TARGET.match((text or "").strip())
        if not m:
            raise ValueError(f"invalid SSH server {text!r}: write host, user@host or user@host:port")
        port = int(m["port"]) if m["port"] else None
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"invalid port in SSH server {text!r}")
        return cls(m["host"].strip("[]"), m["user"], port)

    def __str__(self) -> str:
        s = f"{self.user}@{self.host}" if self.user else self.host
        return f"{s}:{self.port}" if self.port else s

    @property
    def safe_name(self) -> str:
        """For file names: letters, digits, '.', '_' and '-' only."""
        return re.sub(r"[^A-Za-z0-9._-]", "_", str(self))


@dataclass
class SSHOptions:
    """How to connect: an ssh_config file (default ~/.ssh/config), a key, the client."""

    key: str | None = None
    config: str | None = None
    password: str | None = None
    # "auto" (OpenSSH when an ssh binary exists, else paramiko), "openssh" or "paramiko".
    client: str = "auto"
    extra: list[str] = field(default_factory=list)  # extra OpenSSH -o options
    connect_timeout: float = 20.0
