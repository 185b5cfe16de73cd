"""An engine names a request that did not verify back to the controller.

A request whose signed part (header, meta or pickled payload) was altered between the
controller and this engine cannot be trusted, so it is not run; dropping it silently
would leave its task waiting for ever. The engine answers with an unsigned notice
``[wire.REFUSED, msg_id, reason]`` naming the msg_id read from the (untrusted) header.
The controller fails that task only if it is outstanding on exactly this engine
(controller/routing.py), so a forged notice can fail no task an attacker on the path
could not have dropped anyway.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from .. import targetset, wire

log = logging.getLogger("hpcpar.engine")

LOG_EVERY = 10.0  # seconds between warnings (with a count) while requests keep failing to verify
MAX_ID = 200  # longer "msg_ids" are not ours: no notice
# Never answered with a notice: the controller does not wait for these.
NOT_TASKS = frozenset({"register_request", "reregister_request", "abort_request", "interrupt_request"})


class Refusals:
    """Builds refusal notices and logs them at most once per LOG_EVERY (the engine has one peer)."""

    def __init__(self) -> None:
        self.count = 0
        self._quiet = 0
        self._logged = -1e9

    def notice(self, frames: list[Any], engine_id: int | None, problem: str) -> list[bytes] | None:
        """The notice for a request that failed verification, or None if it names no task."""
        self.count += 1
        header = _untrusted_header(frames)
        base, mt = header.get("msg_id"), header.get("msg_type")
        msg_id: str | None = None
        if (isinstance(base, str) and 0 < len(base) <= MAX_ID and isinstance(mt, str)
                and mt.endswith("_request") and mt not in NOT_TASKS):
            direct = header.get("route") == "direct" and engine_id is not None
            msg_id = targetset.task_id(base, engine_id) if direct else base
        self._log(msg_id, problem)
        if msg_id is None:
            return None
        return [wire.REFUSED, msg_id.encode(), problem.encode(errors="replace")[:500]]

    def _log(self, msg_id: str | None, problem: str) -> None:
        now = time.monotonic()
        if now - self._logged < LOG_EVERY:
            self._quiet += 1
            return
        more = f" ({self._quiet} more since the last warning)" if self._quiet else ""
        if msg_id is None:
            log.warning("dropped a message that does not verify: %s%s", problem, more)
        else:
            log.warning("refused request %s, which does not verify (%s): it was altered on its way from "
                        "the controller; the controller is told, so its task fails%s", msg_id, problem, more)
        self._logged, self._quiet = now, 0


def _untrusted_header(frames: list[Any]) -> dict[str, Any]:
    """The header frame as JSON, or {} (it failed verification: used only to name the task)."""
    if len(frames) < 2:
        return {}
    frame = frames[1]
    try:
        header = json.loads(frame.bytes if hasattr(frame, "bytes") else bytes(frame))
    except (ValueError, UnicodeDecodeError, TypeError):
        return {}
    return header if isinstance(header, dict) else {}
