"""``python faulty_controller.py MSG_TYPES hpcpar-args...``: ``hpcpar`` in a process whose
controller raises an error while handling a client message of one of MSG_TYPES (comma-separated).

A stand-in for a bug in the controller (tests/test_controller_errors.py): everything else is
the real controller.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from hpcpar.cli import main
from hpcpar.controller.clients import ClientRequests

FAULTY = set(sys.argv[1].split(","))
_handle = ClientRequests.handle_client


def _faulty_handle(self: ClientRequests, frames: list[Any]) -> None:
    try:
        msg_type = json.loads(bytes(frames[2])).get("msg_type")
    except (ValueError, IndexError):
        msg_type = None
    if msg_type in FAULTY:
        raise RuntimeError(f"injected fault handling {msg_type}")
    _handle(self, frames)


if __name__ == "__main__":
    ClientRequests.handle_client = _faulty_handle  # type: ignore[method-assign]
    sys.exit(main(sys.argv[2:]))
