"""BroadcastView: ipyparallel's name for a DirectView whose replies may come back as one.

Every hpcpar DirectView already sends one message for all its targets; a
BroadcastView made with ``is_coalescing=True`` also gets all the engines'
replies back as one message (as DirectView(coalesce=True) does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .directview import DirectView
from .lowlevel import BROADCAST

if TYPE_CHECKING:
    from .asyncresult import AsyncResult
    from .client import Client


class BroadcastView(DirectView):
    """A DirectView; ``is_coalescing`` brings the replies back as one message."""

    _socket = BROADCAST  # ipyparallel's view._socket, for Client.send_apply_request

    def __init__(self, client: Client, targets: Any = "all", is_coalescing: bool = False, **flags: Any) -> None:
        flags.setdefault("coalesce", True if is_coalescing else None)
        super().__init__(client, targets, **flags)
        self.is_coalescing = is_coalescing

    def _record(self, ar: AsyncResult) -> AsyncResult:
        for md in ar._metadata_list():  # the metadata keys ipyparallel gives a broadcast's results
            md["is_broadcast"] = True
            md["is_coalescing"] = self.is_coalescing
        return super()._record(ar)
