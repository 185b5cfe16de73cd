"""A joblib parallel backend running each batch of joblib calls as a load-balanced task.

``rc.register_joblib_backend()`` (or ``view.register_joblib_backend()``) registers
it; then ``with joblib.parallel_backend("ipyparallel"):`` sends joblib's work
(scikit-learn's ``n_jobs`` included) to the cluster's engines.
"""

from __future__ import annotations

from typing import Any

try:
    from joblib.parallel import AutoBatchingMixin, ParallelBackendBase, register_parallel_backend
except ImportError as e:  # the bridge is optional: say how to get it
    raise ImportError("register_joblib_backend needs joblib: pip install joblib (where the client runs; "
                      "the engines need it too when they run scikit-learn)") from e


class ViewBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's batches become tasks of one (load-balanced) view; ``n_jobs=-1`` means
    as many workers as the view has engines."""

    supports_retrieve_callback = True

    def __init__(self, view: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._given = view  # None: the default client's load-balanced view, made on first use
        self._pending: list[Any] = []

    @property
    def _view(self) -> Any:
        if self._given is None:
            self._given = _default_view()
        return self._given

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        engines = len(self._view)
        if not engines:
            raise RuntimeError("the joblib backend found no engines: start some, or call "
                               "rc.wait_for_engines(n) before joblib.Parallel")
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None or n_jobs < 0:
            n_jobs = engines
        # joblib runs the work in this process when told 1: on a one-engine view, say 2 so
        # that it still goes to the engine (which takes the batches one after the other).
        return max(n_jobs, 2)

    def configure(self, n_jobs: int = 1, parallel: Any = None, **kwargs: Any) -> int:
        self.parallel = parallel
        return self.effective_n_jobs(n_jobs)

    def submit(self, func: Any, callback: Any = None) -> Any:
        ar = self._view.apply_async(func)
        self._pending = [p for p in self._pending if not p.done()] + [ar]
        if callback is not None:
            ar.add_done_callback(callback)
        return ar

    def retrieve_result_callback(self, ar: Any) -> Any:
        return ar.get()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """An error in one batch: drop the batches not started yet."""
        waiting = [ar for ar in self._pending if not ar.done()]
        if waiting:
            self._view.client.abort(jobs=waiting)
        self._pending = []


_default: list[Any] = []  # the Client() of hpcpar.register_joblib_backend(), made once


def _default_view() -> Any:
    """``Client()`` (the default profile's cluster), as ipyparallel's module-level backend uses."""
    if not _default:
        from ..client.client import Client

        _default.append(Client())
    return _default[0].load_balanced_view()


def register_joblib_backend(name: str = "ipyparallel", make_default: bool = False) -> None:
    """``hpcpar.register_joblib_backend()``: joblib backend ``name`` on the default cluster
    (``Client()``, connected when joblib first uses it), as in ipyparallel."""
    register(None, name, make_default)


def register(view: Any, name: str = "ipyparallel", make_default: bool = False) -> None:
    """Register ``view`` as joblib backend ``name`` (ipyparallel's default name, so its code
    runs unchanged). A DirectView's engines are used load-balanced: one batch, one engine."""
    from ..client.loadbalanced import LoadBalancedView

    if view is not None and not isinstance(view, LoadBalancedView):  # a DirectView would run each batch on all its engines
        targets = getattr(view, "_targets", None)
        view = view.client.load_balanced_view(targets=None if targets == "all" else targets)
    register_parallel_backend(name, lambda *args, **kwargs: ViewBackend(*args, view=view, **kwargs),
                              make_default=make_default)
