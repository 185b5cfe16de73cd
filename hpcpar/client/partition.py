"""Splitting sequences across engines (scatter, DirectView.map) and joining them back.

Two layouts, ipyparallel's ``dist`` argument: ``"b"``, contiguous blocks (engine i gets
the i-th block), and ``"r"``, round robin (engine i gets items i, i + n, i + 2n...).
"""

from __future__ import annotations

from typing import Any


def _is_numpy(obj: Any) -> bool:
    return type(obj).__module__ == "numpy" and hasattr(obj, "shape")


DISTS = ("b", "r")


def check_dist(dist: str) -> str:
    if dist not in DISTS:
        raise ValueError(f"dist must be 'b' (contiguous blocks) or 'r' (round robin), not {dist!r}")
    return dist


def split(seq: Any, n: int, dist: str = "b") -> list[Any]:
    """``n`` parts whose lengths differ by at most one (the first parts are longer):
    contiguous blocks (``dist="b"``) or every n-th item (``dist="r"``).

    Lists stay lists, tuples stay tuples, ranges stay ranges (as ipyparallel's slicing
    gives), numpy arrays are split along axis 0 as views (dtype and trailing shape kept);
    other iterables become lists.
    """
    if n < 1:
        raise ValueError("cannot split across zero engines")
    if not (isinstance(seq, (list, tuple, str, range)) or _is_numpy(seq)):
        seq = list(seq)
    if _is_numpy(seq) and seq.ndim == 0:
        raise TypeError("cannot split a 0-d array; scatter needs a sequence")
    if check_dist(dist) == "r":
        return [seq[i::n] for i in range(n)]
    length = len(seq)
    q, r = divmod(length, n)
    parts = []
    start = 0
    for i in range(n):
        stop = start + q + (1 if i < r else 0)
        parts.append(seq[start:stop])
        start = stop
    return parts


def _sliceable(seq: Any) -> bool:
    return isinstance(seq, (list, tuple, str, range)) or _is_numpy(seq)


def readable(sequences: Any) -> list[Any]:
    """Each sequence as one that can be measured and sliced; iterators and generators
    are read here, once."""
    return [s if _sliceable(s) else list(s) for s in sequences]


def aligned(sequences: Any) -> tuple[list[Any], int]:
    """The sequences of a map, read once (see ``readable``) and cut to the shortest,
    as builtin ``map`` pairs them; and that common length."""
    seqs = readable(sequences)
    n = min(len(s) for s in seqs)
    return [s if len(s) == n else s[:n] for s in seqs], n


def chunks(seq: Any, size: int) -> list[Any]:
    if size < 1:
        raise ValueError(f"chunksize must be at least 1, got {size}")
    if not (isinstance(seq, (list, tuple)) or _is_numpy(seq)):
        seq = list(seq)
    return [seq[i : i + size] for i in range(0, len(seq), size)]


def join(parts: list[Any], dist: str = "b") -> Any:
    """Inverse of :func:`split`: arrays concatenate; list, tuple and range parts join into a list
    (as ipyparallel's gather and map give); other parts (one value per engine) are listed."""
    if check_dist(dist) == "r" and parts:
        return _interleave(parts)
    if parts and all(_is_numpy(p) for p in parts):
        import numpy as np

        return np.concatenate(parts)
    if parts and all(isinstance(p, (list, tuple, range)) or _is_numpy(p) for p in parts):
        out: list[Any] = []
        for p in parts:
            out.extend(p)
        return out
    return list(parts)


def _interleave(parts: list[Any]) -> Any:
    """Inverse of a round-robin split: item k of part i goes to position i + k * len(parts)."""
    n = len(parts)
    if all(_is_numpy(p) for p in parts):
        import numpy as np

        first = parts[0]
        out = np.empty((sum(len(p) for p in parts), *first.shape[1:]), dtype=np.result_type(*parts))
        for i, p in enumerate(parts):
            out[i::n] = p
        return out
    if not all(isinstance(p, (list, tuple, range)) for p in parts):
        return list(parts)  # one value per engine (scalars): nothing to interleave
    out = [None] * sum(len(p) for p in parts)
    for i, p in enumerate(parts):
        out[i::n] = list(p)
    return out
