"""What every view shares: flags, apply/map in their three flavours, waiting, decorators.

The view kinds live in their own modules: directview.py (you pick the engines),
loadbalanced.py (the controller picks), broadcastview.py, and executor.py
(a concurrent.futures.Executor over any view).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .asyncresult import AsyncMapResult, AsyncResult

if TYPE_CHECKING:
    from .client import Client
    from .executor import ViewExecutor


def _fname(f: Any) -> str:
    return getattr(f, "__name__", None) or type(f).__name__



def check_callable(f: Any) -> Any:
    """``f`` for apply/map: a callable, or an engine-side name (Reference) or PrePickled one;
    anything else is refused here, before it is sent, as ipyparallel does."""
    from ..serialize import PrePickled
    from .reference import Reference

    if not callable(f) and not isinstance(f, (Reference, PrePickled)):
        raise TypeError(f"f must be callable (a function, or a Reference to one on the engines), "
                        f"not {type(f).__name__}")
    return f

class View:
    """What every view shares: flags, apply/map in their three flavours, waiting."""

    _flag_names: tuple[str, ...] = ("targets", "block", "track", "label")

    def __init__(self, client: Client, targets: Any = None, **flags: Any) -> None:
        self.client = client
        self._targets = targets
        self.block = client.block
        self.track = False
        self.label: str | None = None
        self.history: list[str] = []
        self.set_flags(**flags)

    @property
    def targets(self) -> Any:
        return self._targets

    @targets.setter
    def targets(self, value: Any) -> None:
        self._targets = value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._targets!r}>"

    def set_flags(self, **kwargs: Any) -> None:
        for name, value in kwargs.items():
            if name not in self._flag_names:
                raise KeyError(f"invalid flag {name!r} for {type(self).__name__}; valid flags: {', '.join(self._flag_names)}")
            self._check_flag(name, value)
            setattr(self, name, value)

    def _check_flag(self, name: str, value: Any) -> None:
        pass

    @contextlib.contextmanager
    def temp_flags(self, **kwargs: Any) -> Iterator[View]:
        saved = {name: getattr(self, name) for name in kwargs}
        self.set_flags(**kwargs)
        try:
            yield self
        finally:
            for name, value in saved.items():
                setattr(self, name, value)

    @property
    def outstanding(self) -> set[str]:
        return {m for m in self.history if m in self.client.outstanding}

    @property
    def results(self) -> dict[str, Any]:
        return self.client.results

    def _block(self, block: bool | None) -> bool:
        return self.block if block is None else block

    def _record(self, ar: AsyncResult) -> AsyncResult:
        self.history.extend(ar.msg_ids)
        return ar

    def _send_and_wait(self, msg_ids: list[str], frames: list[Any], header: dict[str, Any], single: bool,
                       fname: str, targets: list[int] | None = None) -> Any:
        """A blocking call: send, wait, return what ``AsyncResult.get()`` would, without
        making the AsyncResult nobody sees (see ``Client._wait_results``)."""
        self.client._send_tracked(msg_ids, frames, header, None, targets)
        self.history.extend(msg_ids)
        return self.client._wait_results(msg_ids, single, fname)

    # -- apply -------------------------------------------------------------------------------

    def _really_apply(self, f: Any, args: tuple = (), kwargs: dict | None = None, block: bool | None = None,
                      **options: Any) -> Any:
        raise NotImplementedError

    def apply(self, __f: Any, *args: Any, **kwargs: Any) -> Any:
        """Call ``f(*args, **kwargs)`` remotely; blocking or not per ``self.block``."""
        return self._really_apply(check_callable(__f), args, kwargs)

    def apply_async(self, __f: Any, *args: Any, **kwargs: Any) -> AsyncResult:
        return self._really_apply(check_callable(__f), args, kwargs, block=False)

    def apply_sync(self, __f: Any, *args: Any, **kwargs: Any) -> Any:
        return self._really_apply(check_callable(__f), args, kwargs, block=True)

    def map(self, f: Any, *sequences: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def map_async(self, f: Any, *sequences: Any, **kwargs: Any) -> AsyncMapResult:
        kwargs["block"] = False
        return self.map(f, *sequences, **kwargs)

    def map_sync(self, f: Any, *sequences: Any, **kwargs: Any) -> list[Any]:
        kwargs["block"] = True
        return self.map(f, *sequences, **kwargs)

    def imap(self, f: Any, *sequences: Any, **kwargs: Any) -> MapIterator:
        """Results of ``map`` one by one as they arrive; ``cancel()`` drops the rest."""
        ar = self.map_async(f, *sequences, **kwargs)
        return MapIterator(iter(ar), lambda: None if ar.ready() else ar.abort())

    # -- waiting and control ----------------------------------------------------------------

    def wait(self, jobs: Any = None, timeout: float = -1) -> bool:
        return self.client.wait(self.outstanding if jobs is None else jobs, timeout)

    def abort(self, jobs: Any = None, targets: Any = None, block: bool | None = None) -> Any:
        if jobs is None:
            jobs = list(self.outstanding)
        return self.client.abort(jobs=jobs, targets=targets, block=block)

    def queue_status(self, targets: Any = None, verbose: bool = False) -> dict[Any, Any]:
        """The queues of this view's engines (``targets``: others)."""
        if targets is None:
            targets = self._targets if self._targets is not None else "all"
        return self.client.queue_status(targets, verbose)

    def get_result(self, indices_or_msg_ids: Any = None, block: bool | None = None, owner: bool = False) -> Any:
        """Like Client.get_result, but integers index this view's history (default: its last)."""
        jobs = -1 if indices_or_msg_ids is None else indices_or_msg_ids
        if isinstance(jobs, int):
            jobs = self.history[jobs]
        elif isinstance(jobs, (list, tuple, set)):
            jobs = [self.history[j] if isinstance(j, int) else j for j in jobs]
        return self.client.get_result(jobs, block, owner=owner)

    def result_status(self, msg_ids: Any, status_only: bool = True) -> dict[str, Any]:
        return self.client.result_status(msg_ids, status_only)

    def purge_results(self, jobs: Any = (), targets: Any = ()) -> None:
        """Forget finished results here and at the hub (see ``Client.purge_results``)."""
        self.client.purge_results(jobs, targets)

    def shutdown(self, targets: Any = None, restart: bool = False, hub: bool = False,
                 block: bool | None = None) -> None:
        """Stop this view's engines (``targets``: others); with ``hub=True`` also the controller."""
        return self.client.shutdown(self._targets if targets is None else targets, restart, hub, block)

    def spin(self) -> None:
        """A no-op kept for ipyparallel compatibility: I/O runs in a background thread."""

    def use_cloudpickle(self) -> None:
        self.client.use_cloudpickle()

    def use_pickle(self) -> None:
        self.client.use_pickle()

    def use_dill(self) -> None:
        """Serialize with dill (here and on the engines); ``use_pickle()`` goes back."""
        self.client.use_dill()

    def register_joblib_backend(self, name: str = "ipyparallel", make_default: bool = False) -> None:
        """Make joblib (and scikit-learn's ``n_jobs``) run on this view's engines:
        ``with joblib.parallel_backend("ipyparallel"): ...``. Needs joblib."""
        from ..bridges import joblib_backend

        joblib_backend.register(self, name, make_default)

    def remote(self, block: bool | None = None, **flags: Any):
        """Decorator: calling the function runs it through this view."""
        from .remotefunction import remote

        return remote(self, block=block, **flags)

    def parallel(self, dist: str = "b", block: bool | None = None, **flags: Any):
        """Decorator: calling the function splits its sequences across this view, one call
        per part, results concatenated; ``.map`` calls it per element (see ParallelFunction)."""
        from .remotefunction import parallel

        return parallel(self, dist=dist, block=block, **flags)

    @property
    def executor(self) -> ViewExecutor:
        """A ``concurrent.futures.Executor`` running its calls through this view."""
        from .executor import ViewExecutor

        return ViewExecutor(self)


class MapIterator(Iterator[Any]):
    """What ``imap`` returns: the results in turn; ``cancel()`` stops early (tasks not
    yet finished are aborted and iteration ends)."""

    def __init__(self, results: Iterator[Any], cancel: Callable[[], None]) -> None:
        self._results = results
        self._cancel = cancel

    def __next__(self) -> Any:
        return next(self._results)

    def cancel(self) -> None:
        results, self._results = self._results, iter(())
        try:
            self._cancel()
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()
