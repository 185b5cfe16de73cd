"""Sending a signed message again after a controller restore (engine/outbox.py, client/resend.py).

The controller drops a message whose (session, seq) it has seen (security.ReplayGuard), and one
older than its replay window. A message sent again on purpose gets a new sequence number and
date, signed again with the same key; everything else, msg_id included, stays as it was.
"""

from __future__ import annotations

import json
from typing import Any


def resigned(signer: Any, frames: list[Any]) -> list[Any]:
    header = json.loads(bytes(frames[1]))
    fresh = signer.header(header["msg_type"])
    header.update(seq=fresh["seq"], date=fresh["date"])
    h = json.dumps(header, separators=(",", ":")).encode()
    meta, payload = frames[2], frames[3]
    return [signer.signature(h, bytes(meta), bytes(payload)), h, meta, payload, *frames[4:]]
