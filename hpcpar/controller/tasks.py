"""What the controller holds per task in flight (plain data, shared by the controller's parts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False, slots=True)
class Task:
    client: bytes
    msg_id: str
    reply_type: str
    engine_id: int | None
    lb: bool
    header: dict[str, Any]
    frames: list[Any] | None = None  # kept while queued or in flight, for retries
    retries_left: int = 0
    deadline: float | None = None
    allowed: set[int] | None = None
    blacklist: set[int] = field(default_factory=set)
    host_key: str | None = None  # its data is in shared memory: only engines of this host key may take it
    attempts: int = 0
    watchers: list[bytes] = field(default_factory=list)  # other clients that asked for the result
    group: ReplyGroup | None = None  # replies of one broadcast, sent back as one message


@dataclass(eq=False, slots=True)
class ReplyGroup:
    """The replies of one request to several engines, collected so the client
    gets ONE message however many engines there are."""

    client: bytes
    remaining: int
    parts: list[list[Any]] = field(default_factory=list)
    msg_ids: list[str] = field(default_factory=list)



def reply_type_of(msg_type: str) -> str:
    """``apply_request`` -> ``apply_reply``: the reply a request gets (also when the controller answers for an engine)."""
    return msg_type[: -len("_request")] + "_reply" if msg_type.endswith("_request") else msg_type + "_reply"
