"""Client-side help for MPI engines: which engines share one MPI job, and a warning when
code is sent to only some of its ranks.

An MPI collective (``comm.allreduce``, ``comm.Barrier`` ...) returns only when every rank
of the communicator calls it. Sent through a view on a subset of the ranks, it waits
forever: the other ranks never call it. Engines started with ``--mpi`` report
``mpi_rank``, ``mpi_size`` and ``mpi_world`` (one id per MPI job), so the client can tell.
"""

from __future__ import annotations

import re
import types
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

# mpi4py's collective operations (both spellings), communicator constructors (collective
# too) and the nonblocking variants: the names that, called on a subset, wait forever.
_BASE = ("Barrier", "Bcast", "Gather", "Gatherv", "Scatter", "Scatterv", "Allgather", "Allgatherv",
         "Alltoall", "Alltoallv", "Alltoallw", "Reduce", "Allreduce", "Reduce_scatter",
         "Reduce_scatter_block", "Scan", "Exscan", "Neighbor_allgather", "Neighbor_alltoall")
COLLECTIVES = frozenset(
    [*_BASE, *(n.lower() for n in _BASE), *("I" + n[0].lower() + n[1:] for n in _BASE),
     *("I" + n for n in _BASE), "Split", "Split_type", "Dup", "Create", "Create_cart", "Create_graph",
     "Spawn", "Merge", "Fence", "Allocate", "Allocate_shared", "Create_dynamic"]
)
_CALL = re.compile(r"\b(" + "|".join(sorted(COLLECTIVES, key=len, reverse=True)) + r")\s*\(")


class MPISubsetWarning(UserWarning):
    """Code was sent to some but not all ranks of an MPI job (a collective would hang).

    Silence it with ``warnings.filterwarnings("ignore", category=hpcpar.MPISubsetWarning)``.
    """


def mpi_worlds(engines: Mapping[int, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{world id: {"size": N, "ids": [engine ids ordered by rank]}}`` of the registered engines."""
    worlds: dict[str, dict[str, Any]] = {}
    for eid, info in engines.items():
        world, size = info.get("mpi_world"), info.get("mpi_size")
        if not world or not isinstance(size, int) or size < 2:
            continue
        entry = worlds.setdefault(world, {"size": size, "ranks": {}})
        entry["ranks"][int(info.get("mpi_rank", eid))] = eid
    return {
        w: {"size": e["size"], "ids": [e["ranks"][r] for r in sorted(e["ranks"])]}
        for w, e in worlds.items()
    }


def subset_message(engines: Mapping[int, Mapping[str, Any]], targets: Iterable[int]) -> str | None:
    """A sentence when ``targets`` holds some but not all ranks of an MPI job, else None."""
    wanted = set(targets)
    for world in mpi_worlds(engines).values():
        ids, size = world["ids"], world["size"]
        inside = [eid for eid in ids if eid in wanted]
        if not inside or len(inside) == size:
            continue
        missing = size - len(inside)
        ranks = sorted(int(engines[e].get("mpi_rank", e)) for e in inside)
        return (
            f"sending to {len(inside)} of the {size} ranks of one MPI job (ranks {_span(ranks)}): "
            f"an MPI collective on COMM_WORLD in this code waits forever for the other {missing}. "
            "Send collectives to the whole job (rc[:] or rc.direct_view()); if one hangs, "
            "call the same collective on the missing ranks, or end the job with 'hpcpar stop' "
            "(rc.send_signal('SIGINT') does not interrupt a rank blocked inside MPI)"
        )
    return None


def mentions_collective(code: Any) -> bool:
    """Whether code text, or a function (its code and the code nested in it), names an MPI
    collective. Unknown kinds of callables count as yes: better a warning than a hang."""
    if isinstance(code, str):
        return _CALL.search(code) is not None
    func = getattr(code, "func", code)  # functools.partial
    func = getattr(func, "__func__", func)  # bound methods
    obj = getattr(func, "__code__", None)
    if obj is None:
        return not isinstance(func, (types.BuiltinFunctionType, type))
    stack = [obj]
    while stack:
        c = stack.pop()
        if COLLECTIVES.intersection(c.co_names):
            return True
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return False


def warn_if_subset(client: Any, targets: Iterable[int], stacklevel: int = 3, code: Any = None) -> None:
    """Warn (MPISubsetWarning) when ``targets`` covers only part of an MPI job and ``code``
    (text or a function; None: unknown) calls an MPI collective."""
    if code is not None and not mentions_collective(code):
        return
    engines = getattr(client, "_engines", None)
    if not engines:
        return
    lock = getattr(client, "_lock", None)
    if lock is not None:
        with lock:
            engines = dict(engines)
    message = subset_message(dict(engines), targets)
    if message:
        warnings.warn(message, MPISubsetWarning, stacklevel=stacklevel + 1)


def _span(values: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    parts: list[str] = []
    start = prev = None
    for v in values + [None]:  # type: ignore[list-item]
        if v is not None and prev is not None and v == prev + 1:
            prev = v
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = v
    return ", ".join(parts)
