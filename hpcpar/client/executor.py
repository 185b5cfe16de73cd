"""ViewExecutor: a ``concurrent.futures.Executor`` over any view."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .asyncresult import AsyncResult

if TYPE_CHECKING:
    from .view import View


class ViewExecutor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` over a view; futures are AsyncResults."""

    def __init__(self, view: View) -> None:
        self.view = view
        self._submitted: list[AsyncResult] = []  # what shutdown(cancel_futures=True) may drop
        self._shut = False

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> AsyncResult:
        if self._shut:
            raise RuntimeError("cannot submit to an executor after shutdown(); make a new one with view.executor")
        ar = self.view.apply_async(fn, *args, **kwargs)
        self._submitted = [f for f in self._submitted if not f.done()]
        self._submitted.append(ar)
        return ar

    def map(self, fn: Any, *iterables: Any, timeout: float | None = None, chunksize: int = 1,
            **kwargs: Any) -> Iterator[Any]:
        """Results in order, as ``concurrent.futures.Executor.map``: with ``timeout``, every task is
        submitted now and the iterator raises TimeoutError once ``timeout`` seconds have passed
        since this call without the next result (tasks not finished then are aborted).
        Other keyword arguments go to the view's ``imap``, as in ipyparallel: ``ordered``,
        ``max_outstanding``, ``return_exceptions`` on a load-balanced view (``return_exceptions``,
        ``targets`` on a DirectView)."""
        from .loadbalanced import LoadBalancedView

        lb = isinstance(self.view, LoadBalancedView)
        if timeout is None and (chunksize == 1 or not lb):
            return self.view.imap(fn, *iterables, **kwargs)
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        kwargs.pop("max_outstanding", None)  # every task is submitted now (a deadline, or chunks)
        ar = self.view.map_async(fn, *iterables, chunksize=chunksize, **kwargs) if lb else \
            self.view.map_async(fn, *iterables, **kwargs)
        parts = [ar._like([m], False) for m in ar.msg_ids] if lb else [ar]  # each a chunk's items, in order
        return self._until(ar, parts, deadline, timeout)

    def _until(self, ar: AsyncResult, parts: Any, deadline: float, timeout: float) -> Iterator[Any]:
        try:
            for part in parts:
                try:
                    left = deadline - time.monotonic()
                    values = part.get(timeout=None if left == float("inf") else max(0.0, left))
                except TimeoutError:
                    raise concurrent.futures.TimeoutError(
                        f"executor.map: results not ready within timeout={timeout} s") from None
                yield from values
        finally:
            if not ar.ready():
                self.view.client.abort(jobs=ar)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions; ``cancel_futures`` aborts this executor's tasks that have
        not started, ``wait`` waits for the rest. The engines keep running."""
        self._shut = True
        pending = [f for f in self._submitted if not f.done()]
        if cancel_futures and pending:
            self.view.client.abort(jobs=pending)
        if wait and pending:
            self.view.client.wait(pending)
