"""ViewExecutor: a ``concurrent.futures.Executor`` over any view."""

from __future__ import annotations

import concurrent.futures
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

    def map(self, fn: Any, *iterables: Any, timeout: float | None = None, chunksize: int = 1) -> Iterator[Any]:
        from .loadbalanced import LoadBalancedView

        if isinstance(self.view, LoadBalancedView):
            return self.view.imap(fn, *iterables)
        return iter(self.view.map_sync(fn, *iterables))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions; ``cancel_futures`` aborts this executor's tasks that have
        not started, ``wait`` waits for the rest. The engines keep running."""
        self._shut = True
        pending = [f for f in self._submitted if not f.done()]
        if cancel_futures and pending:
            self.view.client.abort(jobs=pending)
        if wait and pending:
            self.view.client.wait(pending)
