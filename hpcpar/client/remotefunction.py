"""``@remote`` and ``@parallel``: functions that run through a view when called.

Both exist as view methods (``@view.remote()``) and, as in ipyparallel, as
top-level decorators taking the view (``@hpcpar.remote(view)``).
"""

from __future__ import annotations

import functools
from typing import Any

from ..engine import builtins as engine_builtins
from . import partition


class RemoteFunction:
    """Calling it applies the wrapped function through the view."""

    def __init__(self, view: Any, func: Any, block: bool | None = None, **flags: Any) -> None:
        self.view = view
        self.func = func
        self.block = block
        self.flags = flags
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        block = self.view.block if self.block is None else self.block
        with self.view.temp_flags(block=block, **self.flags):
            return self.view.apply(self.func, *args, **kwargs)


class ParallelFunction(RemoteFunction):
    """Calling it splits its sequence arguments into parts and calls the wrapped
    function once per part (on a DirectView: one part per engine; on a
    LoadBalancedView: parts of ``chunksize`` items), the results concatenated.
    ``.map(...)`` calls it once per element instead, like builtin ``map``."""

    def __init__(self, view: Any, func: Any, dist: str = "b", block: bool | None = None,
                 chunksize: int | None = None, ordered: bool = True, **flags: Any) -> None:
        partition.check_dist(dist)
        super().__init__(view, func, block=block, **flags)
        self.dist = dist
        self.chunksize = chunksize
        self.ordered = ordered

    def __call__(self, *sequences: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError("a parallel function takes only sequences; bind other arguments with functools.partial")
        return self._run(sequences, mapping=False)

    def map(self, *sequences: Any) -> Any:
        """Call the function on each element (the shortest sequence sets the length)."""
        return self._run(sequences, mapping=True)

    def _run(self, sequences: tuple[Any, ...], mapping: bool) -> Any:
        if not sequences:
            raise TypeError("a parallel function needs at least one sequence")
        seqs = partition.readable(sequences)
        lengths = [len(s) for s in seqs]
        if not mapping and len(set(lengths)) > 1:
            raise ValueError(f"the sequences of a parallel function must have equal lengths, got {lengths}; "
                             "use .map(...) to stop at the shortest")
        seqs, n_items = partition.aligned(seqs)
        block = self.view.block if self.block is None else self.block
        name = getattr(self.func, "__name__", "parallel")
        with self.view.temp_flags(block=block, **self.flags):
            if hasattr(self.view, "_per_engine"):  # a DirectView: one part per engine
                targets = self.view._target_list()
                parts = [partition.split(s, len(targets), self.dist) for s in seqs]
                calls = [(eid, [p[i] for p in parts]) for i, eid in enumerate(targets)]
                calls = [(eid, args) for eid, args in calls if len(args[0])]  # no call on an empty part
                objs = [self._call_obj(args, mapping) for _, args in calls]
                return self.view._per_engine([eid for eid, _ in calls], objs, name, block,
                                             joiner=lambda results: partition.join(results, self.dist),
                                             n_items=n_items)
            chunked = [partition.chunks(s, self.chunksize or 1) for s in seqs]
            objs = [self._call_obj([c[i] for c in chunked], mapping) for i in range(len(chunked[0]))]
            return self.view._per_task(objs, name, block, self.ordered, joiner=partition.join, n_items=n_items)

    def _call_obj(self, parts: list[Any], mapping: bool) -> tuple:
        if mapping:
            return (engine_builtins.map_chunk, (self.func, *parts), {})
        return (self.func, tuple(parts), {})


def remote(view: Any, block: bool | None = None, **flags: Any):
    """Decorator: calling the function applies it through ``view``."""

    def decorator(f: Any) -> RemoteFunction:
        return RemoteFunction(view, f, block=block, **flags)

    return decorator


def parallel(view: Any, dist: str = "b", block: bool | None = None, **flags: Any):
    """Decorator: calling the function splits its sequences across ``view`` (see ParallelFunction)."""

    def decorator(f: Any) -> ParallelFunction:
        return ParallelFunction(view, f, dist=dist, block=block, **flags)

    return decorator
