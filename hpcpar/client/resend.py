"""Requests a client keeps until their results arrive, for a controller that lost them.

A controller SIGKILLed right after a burst of submissions may not have recorded the last of
them (its hub writes in batches); after ``hpcpar start --restore`` the client's resync learns
which of its tasks the database does not know, and sends those requests again (same msg_id,
re-signed: redeliver.py). Held up to HOLD_BYTES in all; requests whose data went through shared
memory are not held (their files go once an engine has read them).
"""

from __future__ import annotations

import threading
from typing import Any

HOLD_BYTES = 256 << 20


class SentRequests:
    def __init__(self, limit: int = HOLD_BYTES) -> None:
        self.limit = limit
        self.held: dict[str, tuple[list[Any], tuple[str, ...], int]] = {}  # msg_id -> (frames, its ids, size)
        self.nbytes = 0
        self._lock = threading.Lock()

    def keep(self, msg_ids: list[str], frames: list[Any], header: dict[str, Any]) -> None:
        if header.get("shm") or header.get("route") == "controller":
            return
        size = sum(len(f) for f in frames)
        with self._lock:
            if self.nbytes + size > self.limit:
                return
            entry = (frames, tuple(msg_ids), size)
            for mid in msg_ids:
                self.held[mid] = entry
            self.nbytes += size

    def done(self, msg_id: str) -> None:
        with self._lock:
            entry = self.held.pop(msg_id, None)
            if entry is not None and not any(m in self.held for m in entry[1]):
                self.nbytes -= entry[2]

    def to_resend(self, unknown: list[str]) -> tuple[list[list[Any]], list[str]]:
        """Requests to send again for these tasks (all of a request's unfinished tasks must be
        unknown, so no engine gets one twice), and the ids covered."""
        wanted = set(unknown)
        requests, covered, seen = [], [], set()
        with self._lock:
            for mid in unknown:
                entry = self.held.get(mid)
                if entry is None or id(entry) in seen:
                    continue
                seen.add(id(entry))
                if all(m in wanted for m in entry[1] if m in self.held):
                    requests.append(entry[0])
                    covered.extend(m for m in entry[1] if m in self.held)
        return requests, covered
