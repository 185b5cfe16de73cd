"""LoadBalancedView: the controller sends each task to an engine of its choosing."""

from __future__ import annotations

import concurrent.futures
import itertools
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..engine import builtins as engine_builtins
from . import partition
from .asyncresult import AsyncMapResult, AsyncResult
from .dependency import dependency_spec
from .lowlevel import TASK
from .view import MapIterator, View, _fname, check_callable

if TYPE_CHECKING:
    from .client import Client


class LoadBalancedView(View):
    """The controller sends each task to an engine of its choosing."""

    _socket = TASK  # ipyparallel's view._socket, for Client.send_apply_request

    _flag_names = View._flag_names + ("follow", "after", "timeout", "retries")

    def __init__(self, client: Client, targets: Any = None, **flags: Any) -> None:
        self.follow = None
        self.after = None
        self.timeout: float | None = None
        self.retries = 0
        super().__init__(client, targets, **flags)

    def __len__(self) -> int:
        return len(self.client._build_targets(self._targets)) if self._targets is not None else len(self.client.ids)

    def _check_flag(self, name: str, value: Any) -> None:
        if name in ("after", "follow"):
            dependency_spec(value)  # raises TypeError for something that is not a dependency
        if name == "retries" and (not isinstance(value, int) or value < 0):
            raise ValueError(f"retries must be a non-negative int, got {value!r}")
        if name == "timeout" and value is not None and not isinstance(value, (int, float)):
            raise ValueError(f"timeout must be a number of seconds or None, got {value!r}")

    def _header_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"label": self.label}
        if self._targets is not None:
            extra["lb_targets"] = self.client._build_targets(self._targets)
        if self.retries:
            extra["retries"] = self.retries
        if self.timeout:
            extra["timeout"] = self.timeout
        for key in ("after", "follow"):
            spec = dependency_spec(getattr(self, key))
            if spec:
                extra[key] = spec
        return extra

    def _submit_one(self, obj: Any, fname: str) -> tuple[list[str], list[Any], dict[str, Any]]:
        return self.client._submit("apply_request", route="lb", obj=obj, header_extra=self._header_extra())

    def _really_apply(self, f: Any, args: tuple = (), kwargs: dict | None = None, block: bool | None = None,
                      **options: Any) -> Any:
        ids, frames, header = self._submit_one((f, tuple(args), dict(kwargs or {})), _fname(f))
        if self._block(block):
            return self._send_and_wait(ids, frames, header, True, _fname(f))
        ar = AsyncResult(self.client, ids, fname=_fname(f), single=True)
        self.client._send_tracked(ids, frames, header, ar)
        return self._record(ar)

    def map(self, f: Any, *sequences: Any, block: bool | None = None, chunksize: int = 1, ordered: bool = True,
            return_exceptions: bool = False, track: bool | None = None) -> Any:
        """One load-balanced task per ``chunksize`` items; results come back in order
        (iteration follows completion order when ``ordered=False``)."""
        check_callable(f)
        if not sequences:
            raise TypeError("map needs at least one sequence")
        seqs, n_items = partition.aligned(sequences)
        chunked = [partition.chunks(s, chunksize) for s in seqs]
        objs = [(engine_builtins.map_chunk, (f, *[c[i] for c in chunked]), {}) for i in range(len(chunked[0]))]
        return self._per_task(objs, _fname(f), block, ordered, n_items=n_items, return_exceptions=return_exceptions,
                              chunk_sizes=[len(c) for c in chunked[0]])

    def _per_task(self, objs: list[Any], fname: str, block: bool | None, ordered: bool = True,
                  joiner: Any = None, n_items: int | None = None, **map_options: Any) -> Any:
        """One load-balanced apply per item of ``objs``, results joined as one AsyncMapResult."""
        client = self.client
        batches = []
        msg_ids: list[str] = []
        for obj in objs:
            ids, frames, header = self._submit_one(obj, fname)
            msg_ids.extend(ids)
            batches.append((ids, frames, header))
        ar = AsyncMapResult(client, msg_ids, fname=fname, ordered=ordered, joiner=joiner, n_items=n_items,
                            **map_options)
        for ids, frames, header in batches:
            client._send_tracked(ids, frames, header, ar)
        self._record(ar)
        return ar.get() if self._block(block) else ar

    def imap(self, f: Any, *sequences: Any, ordered: bool = True, max_outstanding: int | str = "auto",
             return_exceptions: bool = False) -> MapIterator:
        """Lazily map over (possibly infinite) iterables, keeping at most
        ``max_outstanding`` tasks in flight (``"auto"``, the default: the view's engine count;
        0: no limit, the whole input is submitted as it is read), as in ipyparallel.
        ``cancel()`` on the iterator stops reading the input and drops the tasks in flight."""
        limit = _outstanding_limit(max_outstanding, len(self))
        pending: deque[AsyncResult] = deque()

        def cancel() -> None:
            jobs = [ar for ar in pending if not ar.ready()]
            if jobs:
                self.client.abort(jobs=jobs)

        args_iter = zip(*sequences)
        if limit:  # the first tasks go now, as ipyparallel submits from the call on
            for args in itertools.islice(args_iter, limit):
                pending.append(self.apply_async(f, *args))
        return MapIterator(self._imap(f, args_iter, ordered, limit, return_exceptions, pending), cancel)

    def _imap(self, f: Any, args_iter: Iterator[tuple], ordered: bool, limit: int,
              return_exceptions: bool, pending: deque[AsyncResult]) -> Iterator[Any]:

        def value(ar: AsyncResult) -> Any:
            try:
                return ar.get()
            except Exception as e:
                if return_exceptions:
                    return e
                raise

        def ready() -> Iterator[Any]:
            if ordered:
                yield value(pending.popleft())
                return
            done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for ar in [a for a in pending if a in done]:
                pending.remove(ar)
                yield value(ar)

        while True:
            while limit and len(pending) >= limit:
                yield from ready()
            args = next(args_iter, None)  # a tuple: None only at the end
            if args is None:
                break
            pending.append(self.apply_async(f, *args))
            if not limit:  # no limit: the input is read greedily, finished results given meanwhile
                while pending and pending[0].ready():
                    yield value(pending.popleft())
        while pending:
            yield from ready()


def _outstanding_limit(max_outstanding: int | str, n_engines: int) -> int:
    """imap's limit of tasks in flight: 0 for none (ipyparallel's meaning), else at least 1."""
    if max_outstanding == "auto":
        return max(1, n_engines)
    if isinstance(max_outstanding, bool) or not isinstance(max_outstanding, int) or max_outstanding < 0:
        raise ValueError(f"max_outstanding is 'auto', 0 (no limit) or a positive int, not {max_outstanding!r}")
    return max_outstanding
