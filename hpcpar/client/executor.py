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

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.view.apply_async(fn, *args, **kwargs)

    def map(self, fn: Any, *iterables: Any, timeout: float | None = None, chunksize: int = 1) -> Iterator[Any]:
        from .loadbalanced import LoadBalancedView

        if isinstance(self.view, LoadBalancedView):
            return self.view.imap(fn, *iterables)
        return iter(self.view.map_sync(fn, *iterables))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if wait:
            self.view.wait()
