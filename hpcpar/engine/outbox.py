"""Replies an engine keeps until the controller has them on disk.

A controller writes task records in batches (controller/hub.py), so a reply it
forwarded to its client may not be in the task database yet when it dies. Rather
than a disk write per message on the controller's hot path, the engine keeps
each reply until the controller says it is stored ("stored_ack", sent a few
times a second for many replies at once). After the controller is restored
(``hpcpar start --restore``), the engine re-attaches and sends what it still
holds: the new controller records and forwards those replies, and drops (but
acknowledges) the ones it already had.

The main thread adds replies, the I/O thread removes acknowledged ones (under a lock).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from typing import Any

log = logging.getLogger("hpcpar.engine")

MAX_BYTES = 512 << 20  # replies held beyond this (a controller gone for long) drop the oldest
RECENT = 10_000  # msg_ids of requests run (beyond those held), for a restored controller's resync


class Outbox:
    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.held: OrderedDict[str, list[Any]] = OrderedDict()
        self.nbytes = 0
        self.recent: deque[str] = deque(maxlen=RECENT)
        self._recent_set: set[str] = set()
        self._warned = False
        self._lock = threading.Lock()

    def keep(self, msg_id: str, frames: list[Any]) -> None:
        """A reply about to be sent: held until acknowledged."""
        self._seen(msg_id)
        size = sum(len(f) for f in frames)
        with self._lock:
            self._keep(msg_id, frames, size)

    def _keep(self, msg_id: str, frames: list[Any], size: int) -> None:
        old = self.held.pop(msg_id, None)
        if old is not None:
            self.nbytes -= sum(len(f) for f in old)
        self.held[msg_id] = frames
        self.nbytes += size
        while self.nbytes > self.max_bytes and len(self.held) > 1:
            _, dropped = self.held.popitem(last=False)
            self.nbytes -= sum(len(f) for f in dropped)
            if not self._warned:
                self._warned = True
                log.warning("more than %d MB of replies are not acknowledged by the controller; the oldest "
                            "are no longer kept for a controller restore", self.max_bytes >> 20)

    def ack(self, msg_ids: list[str]) -> None:
        with self._lock:
            for msg_id in msg_ids:
                frames = self.held.pop(msg_id, None)
                if frames is not None:
                    self.nbytes -= sum(len(f) for f in frames)

    def pending(self) -> list[list[Any]]:
        """The replies to send again, oldest first."""
        with self._lock:
            return list(self.held.values())

    def _seen(self, msg_id: str) -> None:
        if len(self.recent) == self.recent.maxlen:
            self._recent_set.discard(self.recent[0])
        self.recent.append(msg_id)
        self._recent_set.add(msg_id)

    def unknown(self, msg_ids: list[str]) -> list[str]:
        """Of these tasks, the ones this engine never ran (a restored controller may send them again)."""
        return [m for m in msg_ids if m not in self._recent_set and m not in self.held]
