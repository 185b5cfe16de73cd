"""Splitting sequences across engines (scatter, DirectView.map) and joining them back."""

from __future__ import annotations

from typing import Any


def _is_numpy(obj: Any) -> bool:
    return type(obj).__module__ == "numpy" and hasattr(obj, "shape")


def split(seq: Any, n: int) -> list[Any]:
    """``n`` contiguous parts whose lengths differ by at most one (the first parts are longer).

    Lists stay lists, tuples stay tuples, numpy arrays are split along axis 0
    as views (dtype and trailing shape kept); other iterables become lists.
    """
    if n < 1:
        raise ValueError("cannot split across zero engines")
    if not (isinstance(seq, (list, tuple, str, range)) or _is_numpy(seq)):
        seq = list(seq)
    if _is_numpy(seq) and seq.ndim == 0:
        raise TypeError("cannot split a 0-d array; scatter needs a sequence")
    length = len(seq)
    q, r = divmod(length, n)
    parts = []
    start = 0
    for i in range(n):
        stop = start + q + (1 if i < r else 0)
        part = seq[start:stop]
        if isinstance(seq, range):
            part = list(part)
        parts.append(part)
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


def join(parts: list[Any]) -> Any:
    """Inverse of :func:`split`."""
    if parts and all(_is_numpy(p) for p in parts):
        import numpy as np

        return np.concatenate(parts)
    if parts and all(isinstance(p, tuple) for p in parts):
        return tuple(x for p in parts for x in p)
    if parts and all(isinstance(p, (list, tuple)) or _is_numpy(p) for p in parts):
        out: list[Any] = []
        for p in parts:
            out.extend(p)
        return out
    return list(parts)
