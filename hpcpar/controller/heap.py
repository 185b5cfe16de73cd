"""Give freed heap memory back to the OS after a burst of tasks.

glibc keeps memory freed by a thread in that thread's arena, and releases
only the free space at the very top of it; after thousands of queued tasks
are done, the controller's RSS would otherwise stay at its high-water mark
and creep up with fragmentation. ``malloc_trim(0)`` returns every free page
of every arena. Other C libraries (musl, macOS) lack it: then this does
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("hpcpar.controller.heap")


def _find_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_trim = _find_trim()


def available() -> bool:
    return _trim is not None


def release() -> bool:
    """Return free heap pages to the OS; True if the C library did release some."""
    if _trim is None:
        return False
    try:
        return bool(_trim(0))
    except OSError:  # pragma: no cover - a C library that traps the call
        log.debug("malloc_trim failed", exc_info=True)
        return False
