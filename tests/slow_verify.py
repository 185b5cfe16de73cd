"""``python slow_verify.py SECONDS hpcpar-args...``: ``hpcpar`` in a process whose message
verification takes SECONDS longer for every frame above 64 MB.

A deterministic stand-in for verifying a huge frame on a slow or loaded node (on an idle
machine HMAC-SHA256 runs at about 1.4 GB/s, so how long a real frame keeps the controller's
loop busy depends on the machine): tests/test_heartbeat_grace.py runs the controller so.
Everything else is the real controller.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from hpcpar import wire
from hpcpar.cli import main

HUGE = 64 << 20
_verify = wire.Signer.unpack


def _slow_unpack(self: wire.Signer, frames: list, *args: Any, **kwargs: Any) -> wire.Message:
    if len(frames) > 3 and len(frames[3]) > HUGE:
        time.sleep(float(sys.argv[1]))
    return _verify(self, frames, *args, **kwargs)


if __name__ == "__main__":
    wire.Signer.unpack = _slow_unpack  # type: ignore[method-assign]
    sys.exit(main(sys.argv[2:]))
