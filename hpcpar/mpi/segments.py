"""Shared-memory segments an MPI library leaves in /dev/shm when ranks exit without
MPI_Finalize.

Engines leave with ``os._exit`` (a rank blocked in a collective could never finalize),
and the MPI launcher may SIGKILL ranks, so MPICH's ``mpich_shm_*`` and Open MPI's
``vader_segment.*`` / ``sm_segment.*`` files would pile up in /dev/shm, which is RAM.
A segment is attributed to a job by reading which files its processes map, so nothing
of another job is touched. Removing them is ``sharedmem.unlink``.
"""

from __future__ import annotations

from pathlib import Path

SHM_DIR = Path("/dev/shm")
PREFIXES = ("mpich_shm_", "vader_segment.", "sm_segment.")


def mapped_segments(pid: int | str = "self") -> set[Path]:
    """MPI segments in /dev/shm that process ``pid`` maps (empty where /proc is missing)."""
    found: set[Path] = set()
    try:
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                parts = line.split(maxsplit=5)
                if len(parts) < 6:
                    continue
                path = Path(parts[5].strip().removesuffix(" (deleted)"))
                if path.parent == SHM_DIR and path.name.startswith(PREFIXES):
                    found.add(path)
    except OSError:
        pass
    return found

