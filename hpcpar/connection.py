"""Connection files: what a client or an engine needs to reach a controller.

Two files per cluster in ``<profile>/security/`` (mode 0600): the client file
names the one client port, the engine file the engine port. Both carry the
per-cluster HMAC key and, in curve mode, the controller's public Curve key and the
role's own Curve key pair (security.py). Engines on compute nodes may instead receive the engine
file's JSON in ``$HPCPAR_CONNECTION_INFO`` so no shared filesystem is needed.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CONNECTION_ENV = "HPCPAR_CONNECTION_INFO"
FORMAT_VERSION = 1


class ConnectionFileError(ValueError):
    """A connection file or ``$HPCPAR_CONNECTION_INFO`` is missing or malformed."""


def new_key() -> str:
    return secrets.token_hex(32)


@dataclass
class ConnectionInfo:
    """Everything needed to talk to one controller.

    ``urls`` are tried in order; the first that answers is kept. A client file
    has the client port's URLs, an engine file the engine port's.
    """

    key: str
    urls: list[str]
    role: str  # "client" or "engine"
    cluster_id: str = ""
    profile: str = "default"
    location: str = ""
    controller_pid: int | None = None
    signature_scheme: str = "hmac-sha256"
    ssh: str | None = None
    version: int = FORMAT_VERSION
    # "hmac" (signed messages) or "curve" (CurveZMQ sessions as well; the keys below, Z85).
    transport: str = "hmac"
    curve_server_key: str = ""  # the controller's (or forwarder's) public key
    curve_public_key: str = ""  # this client's or engine's key pair
    curve_secret_key: str = ""
    max_message_size: int = -1  # the controller's frame limit (bytes; -1: none): clients check before sending
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key_bytes(self) -> bytes:
        return self.key.encode("ascii")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> ConnectionInfo:
        if not isinstance(data, dict):
            raise ConnectionFileError(f"{source}: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in ("key", "urls", "role") if k not in data]
        if missing:
            raise ConnectionFileError(
                f"{source}: missing {', '.join(missing)}; this is not an hpcpar connection file "
                "(it is written by 'hpcpar start' or 'hpcpar controller' into <profile>/security/)"
            )
        if data.get("signature_scheme", "hmac-sha256") != "hmac-sha256":
            raise ConnectionFileError(
                f"{source}: unsupported signature_scheme {data['signature_scheme']!r}; "
                "only 'hmac-sha256' is supported"
            )
        transport = data.get("transport", "hmac")
        if transport not in ("hmac", "curve"):
            raise ConnectionFileError(f"{source}: unknown transport {transport!r}; expected 'hmac' or 'curve'")
        if transport == "curve":
            missing = [k for k in ("curve_server_key", "curve_public_key", "curve_secret_key")
                       if not isinstance(data.get(k), str) or len(data[k]) != 40]
            if missing:
                raise ConnectionFileError(f"{source}: transport is 'curve' but {', '.join(missing)} "
                                          "is missing or not a 40-character Z85 key; copy the whole file again")
        urls = data["urls"]
        if isinstance(urls, str):
            urls = [urls]
        if not urls or not all(isinstance(u, str) and u.startswith("tcp://") for u in urls):
            raise ConnectionFileError(f"{source}: 'urls' must be a list of tcp:// URLs, got {urls!r}")
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["urls"] = list(urls)
        kwargs.setdefault("extra", {})
        kwargs["extra"].update({k: v for k, v in data.items() if k not in known})
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ConnectionInfo:
        p = Path(path).expanduser()
        try:
            text = p.read_text()
        except FileNotFoundError:
            raise ConnectionFileError(
                f"connection file {p} does not exist: is the cluster running? "
                "Start one with 'hpcpar start' (or pass the right --profile / cluster id)"
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConnectionFileError(f"connection file {p} is not valid JSON ({e})") from None
        return cls.from_dict(data, str(p))

    @classmethod
    def from_env(cls) -> ConnectionInfo | None:
        raw = os.environ.get(CONNECTION_ENV)
        if not raw:
            return None
        if raw.startswith("<"):  # a rendered or scrubbed job script's placeholder (launchers/batch.py)
            raise ConnectionFileError(f"${CONNECTION_ENV} holds a placeholder, not the connection info: {raw} "
                                      "Submit engine jobs with 'hpcpar start' or 'hpcpar engines', or set it "
                                      "from the profile's security/hpcpar-engine.json")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConnectionFileError(f"${CONNECTION_ENV} is not valid JSON ({e})") from None
        return cls.from_dict(data, f"${CONNECTION_ENV}")

    def write(self, path: str | os.PathLike) -> Path:
        """Write atomically with mode 0600 (the file holds the cluster key)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.to_json())
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)
        return p
