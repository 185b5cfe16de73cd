"""Views: DirectView (you pick the engines) and LoadBalancedView (the controller picks)."""

from __future__ import annotations

import builtins
import concurrent.futures
import contextlib
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..dependency import dependency_spec
from ..engine import builtins as engine_builtins
from . import partition
from .asyncresult import AsyncMapResult, AsyncResult

if TYPE_CHECKING:
    from .client import Client


def _fname(f: Any) -> str:
    return getattr(f, "__name__", None) or type(f).__name__


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
        return self._really_apply(__f, args, kwargs)

    def apply_async(self, __f: Any, *args: Any, **kwargs: Any) -> AsyncResult:
        return self._really_apply(__f, args, kwargs, block=False)

    def apply_sync(self, __f: Any, *args: Any, **kwargs: Any) -> Any:
        return self._really_apply(__f, args, kwargs, block=True)

    def map(self, f: Any, *sequences: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def map_async(self, f: Any, *sequences: Any, **kwargs: Any) -> AsyncMapResult:
        kwargs["block"] = False
        return self.map(f, *sequences, **kwargs)

    def map_sync(self, f: Any, *sequences: Any, **kwargs: Any) -> list[Any]:
        kwargs["block"] = True
        return self.map(f, *sequences, **kwargs)

    def imap(self, f: Any, *sequences: Any, **kwargs: Any) -> Iterator[Any]:
        return iter(self.map_async(f, *sequences, **kwargs))

    # -- waiting and control ----------------------------------------------------------------

    def wait(self, jobs: Any = None, timeout: float = -1) -> bool:
        return self.client.wait(self.outstanding if jobs is None else jobs, timeout)

    def abort(self, jobs: Any = None, targets: Any = None, block: bool | None = None) -> Any:
        if jobs is None:
            jobs = list(self.outstanding)
        return self.client.abort(jobs=jobs, targets=targets, block=block)

    def queue_status(self, targets: Any = None, verbose: bool = False) -> dict[Any, Any]:
        return self.client.queue_status(targets if targets is not None else "all", verbose)

    def get_result(self, indices_or_msg_ids: Any = None, block: bool | None = None) -> Any:
        return self.client.get_result(indices_or_msg_ids, block)

    def use_cloudpickle(self) -> None:
        self.client.use_cloudpickle()

    def use_pickle(self) -> None:
        self.client.use_pickle()

    def remote(self, block: bool | None = None, **flags: Any):
        """Decorator: calling the function runs it through this view."""
        from .remotefunction import remote

        return remote(self, block=block, **flags)

    def parallel(self, dist: str = "b", block: bool | None = None, **flags: Any):
        """Decorator: calling the function maps it over its arguments through this view."""
        from .remotefunction import parallel

        return parallel(self, dist=dist, block=block, **flags)

    def executor(self) -> ViewExecutor:
        return ViewExecutor(self)


class DirectView(View):
    """Runs work on the engines you name. One message reaches every target; for a
    blocking call (or always, with ``coalesce=True``) their replies come back as one message."""

    _flag_names = View._flag_names + ("coalesce",)

    def __init__(self, client: Client, targets: Any = "all", **flags: Any) -> None:
        self.coalesce: bool | None = None  # None: coalesce blocking calls only
        super().__init__(client, targets if targets is not None else "all", **flags)

    def __len__(self) -> int:
        return len(self._target_list())

    def _target_list(self, targets: Any = None) -> list[int]:
        return self.client._build_targets(self._targets if targets is None else targets)

    def _single(self, targets: Any = None) -> bool:
        return isinstance(self._targets if targets is None else targets, int)

    def _send(self, msg_type: str, targets: Any, *, obj: Any = None, meta: dict | None = None,
              fname: str = "", block: bool = False) -> AsyncResult:
        """Send to the targets; an AsyncResult of the call."""
        return self._call(msg_type, targets, obj=obj, meta=meta, fname=fname, block=block, wait=False)

    def _call(self, msg_type: str, targets: Any, *, obj: Any = None, meta: dict | None = None,
              fname: str = "", block: bool = False, wait: bool | None = None) -> Any:
        """Send to the targets; with ``wait`` (default: ``block``) wait and return the
        result (raising the failure), else an AsyncResult of the call."""
        client = self.client
        target_list = self._target_list(targets)
        # Coalesced replies all arrive when the last engine is done: right for a
        # blocking call, which waits for all anyway; a non-blocking one keeps
        # per-engine progress unless coalescing is asked for.
        coalesce = block if self.coalesce is None else self.coalesce
        extra = {"label": self.label, "coalesce": coalesce and len(target_list) > 1}
        msg_ids, frames, header = client._submit(msg_type, route="direct", targets=target_list, meta=meta,
                                                 obj=obj, header_extra=extra)
        if block if wait is None else wait:
            return self._send_and_wait(msg_ids, frames, header, self._single(targets), fname or msg_type, target_list)
        ar = AsyncResult(client, msg_ids, fname=fname or msg_type, targets=target_list,
                         single=self._single(targets))
        client._send_tracked(msg_ids, frames, header, ar, target_list)
        return self._record(ar)

    def _really_apply(self, f: Any, args: tuple = (), kwargs: dict | None = None, block: bool | None = None,
                      targets: Any = None, track: bool | None = None) -> Any:
        _warn_mpi_subset(self, targets)
        return self._call("apply_request", targets, obj=(f, tuple(args), dict(kwargs or {})), fname=_fname(f),
                          block=self._block(block))

    def map(self, f: Any, *sequences: Any, block: bool | None = None, track: bool | None = None,
            return_exceptions: bool = False, targets: Any = None) -> Any:
        """Split each sequence into one contiguous part per engine; ``f`` maps over its part."""
        if not sequences:
            raise TypeError("map needs at least one sequence")
        target_list = self._target_list(targets)
        n_items = min(len(s) if hasattr(s, "__len__") else len(list(s)) for s in sequences)
        parts = [partition.split(s if hasattr(s, "__len__") else list(s), len(target_list)) for s in sequences]
        client = self.client
        msg_ids: list[str] = []
        batches = []
        for i, eid in enumerate(target_list):
            obj = (engine_builtins.map_chunk, (f, *[p[i] for p in parts]), {})
            ids, frames, header = client._submit("apply_request", route="direct", targets=[eid], obj=obj,
                                                 header_extra={"label": self.label})
            msg_ids.extend(ids)
            batches.append((ids, frames, header, eid))
        ar = AsyncMapResult(client, msg_ids, fname=_fname(f), n_items=n_items)
        for ids, frames, header, eid in batches:
            client._send_tracked(ids, frames, header, ar, [eid])
        self._record(ar)
        return ar.get() if self._block(block) else ar

    def execute(self, code: str, silent: bool = True, targets: Any = None, block: bool | None = None) -> AsyncResult:
        """Run code text in each engine's namespace. Returns the AsyncResult
        (after waiting, and raising any error, when blocking)."""
        _warn_mpi_subset(self, targets)
        block = self._block(block)
        ar = self._send("execute_request", targets, meta={"code": code, "silent": silent}, fname="execute",
                        block=block)
        if block:
            ar.get()
        return ar

    def run(self, filename: str | Path, targets: Any = None, block: bool | None = None) -> AsyncResult:
        """Execute a local file's code on the engines."""
        code = Path(filename).read_text()
        return self.execute(code, targets=targets, block=block)

    def push(self, ns: dict[str, Any], targets: Any = None, block: bool | None = None,
             track: bool | None = None) -> Any:
        """Set names in the engines' namespaces. Arrays travel zero-copy."""
        if not isinstance(ns, dict):
            raise TypeError(f"push takes a dict of names to values, not {type(ns).__name__}")
        return self._call("apply_request", targets, obj=(engine_builtins.push, (ns,), {}), fname="push",
                          block=self._block(block))

    update = push

    def pull(self, names: str | list[str] | tuple[str, ...], targets: Any = None, block: bool | None = None) -> Any:
        if not isinstance(names, (str, list, tuple)):
            raise TypeError("pull takes a name or a list of names")
        return self._call("apply_request", targets, obj=(engine_builtins.pull, (names,), {}), fname="pull",
                          block=self._block(block))

    get = pull

    def __setitem__(self, key: str, value: Any) -> None:
        self.push({key: value}, block=True)

    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str):
            raise TypeError("index a DirectView with a variable name, e.g. view['x']")
        return self.pull(key, block=True)

    def scatter(self, key: str, seq: Any, dist: str = "b", flatten: bool = False, targets: Any = None,
                block: bool | None = None, track: bool | None = None) -> Any:
        """Partition ``seq`` across the engines and push each part as ``key``."""
        if dist != "b":
            raise ValueError("only dist='b' (contiguous blocks) is supported")
        target_list = self._target_list(targets)
        parts = partition.split(seq, len(target_list))
        client = self.client
        msg_ids: list[str] = []
        batches = []
        for eid, part in zip(target_list, parts):
            value = part[0] if flatten and len(part) == 1 else part
            ids, frames, header = client._submit("apply_request", route="direct", targets=[eid],
                                                 obj=(engine_builtins.push, ({key: value},), {}))
            msg_ids.extend(ids)
            batches.append((ids, frames, header, eid))
        ar = AsyncMapResult(client, msg_ids, fname="scatter", joiner=lambda results: None)
        for ids, frames, header, eid in batches:
            client._send_tracked(ids, frames, header, ar, [eid])
        self._record(ar)
        return ar.get() if self._block(block) else ar

    def gather(self, key: str, dist: str = "b", targets: Any = None, block: bool | None = None) -> Any:
        """Pull ``key`` from each engine and join the parts (inverse of scatter)."""
        if dist != "b":
            raise ValueError("only dist='b' (contiguous blocks) is supported")
        target_list = self._target_list(targets)
        client = self.client
        msg_ids: list[str] = []
        batches = []
        for eid in target_list:
            ids, frames, header = client._submit("apply_request", route="direct", targets=[eid],
                                                 obj=(engine_builtins.pull, (key,), {}))
            msg_ids.extend(ids)
            batches.append((ids, frames, header, eid))
        ar = AsyncMapResult(client, msg_ids, fname="gather", joiner=partition.join)
        for ids, frames, header, eid in batches:
            client._send_tracked(ids, frames, header, ar, [eid])
        self._record(ar)
        return ar.get() if self._block(block) else ar

    def clear(self, targets: Any = None, block: bool | None = None) -> Any:
        return self.client.clear(self._targets if targets is None else targets, block=block)

    def shutdown(self, targets: Any = None, restart: bool = False, hub: bool = False,
                 block: bool | None = None) -> None:
        return self.client.shutdown(self._targets if targets is None else targets, restart, hub, block)

    def send_signal(self, sig: int | str, targets: Any = None, block: bool | None = None) -> Any:
        return self.client.send_signal(sig, self._targets if targets is None else targets, block=block)

    def activate(self, suffix: str = "") -> None:
        """Make ``%px<suffix>``, ``%%px<suffix>``, ``%autopx<suffix>``,
        ``%pxresult<suffix>`` and ``%pxconfig<suffix>`` run on this view (in IPython)."""
        from .magics import activate

        activate(self, suffix)

    @contextlib.contextmanager
    def sync_imports(self, local: bool = True, quiet: bool = False) -> Iterator[None]:
        """Imports inside this block also run on the engines::

            with view.sync_imports():
                import numpy
        """
        real_import = builtins.__import__
        caller = sys._getframe(2)
        statements: list[str] = []

        def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
            if sys._getframe(1) is caller and level == 0:
                if fromlist:
                    statements.append(f"from {name} import {', '.join(fromlist)}")
                    if not quiet:
                        for item in fromlist:
                            print(f"importing {item} from {name} on engine(s)")
                else:
                    statements.append(f"import {name}")
                    if not quiet:
                        print(f"importing {name} on engine(s)")
            if local:
                return real_import(name, globals, locals, fromlist, level)
            return sys.modules.get(name) or real_import(name, globals, locals, fromlist, level)

        builtins.__import__ = recording_import
        try:
            yield
        finally:
            builtins.__import__ = real_import
        if statements:
            self.execute("\n".join(statements), block=True)


class LoadBalancedView(View):
    """The controller sends each task to an engine of its choosing."""

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
        if not sequences:
            raise TypeError("map needs at least one sequence")
        seqs = [s if hasattr(s, "__len__") else list(s) for s in sequences]
        n_items = min(len(s) for s in seqs)
        chunked = [partition.chunks(s[:n_items], chunksize) for s in seqs]
        client = self.client
        batches = []
        msg_ids: list[str] = []
        for i in range(len(chunked[0]) if chunked else 0):
            obj = (engine_builtins.map_chunk, (f, *[c[i] for c in chunked]), {})
            ids, frames, header = self._submit_one(obj, _fname(f))
            msg_ids.extend(ids)
            batches.append((ids, frames, header))
        ar = AsyncMapResult(client, msg_ids, fname=_fname(f), ordered=ordered, n_items=n_items)
        for ids, frames, header in batches:
            client._send_tracked(ids, frames, header, ar)
        self._record(ar)
        return ar.get() if self._block(block) else ar

    def imap(self, f: Any, *sequences: Any, ordered: bool = True, max_outstanding: int | str = "auto",
             return_exceptions: bool = False) -> Iterator[Any]:
        """Lazily map over (possibly infinite) iterables, keeping at most
        ``max_outstanding`` tasks in flight (default: twice the engine count)."""
        limit = max(1, 2 * len(self.client.ids)) if max_outstanding == "auto" else int(max_outstanding)
        return self._imap(f, zip(*sequences), ordered, limit, return_exceptions)

    def _imap(self, f: Any, args_iter: Iterator[tuple], ordered: bool, limit: int,
              return_exceptions: bool) -> Iterator[Any]:
        pending: deque[AsyncResult] = deque()

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

        for args in args_iter:
            pending.append(self.apply_async(f, *args))
            while len(pending) >= limit:
                yield from ready()
        while pending:
            yield from ready()


class ViewExecutor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` over a view; futures are AsyncResults."""

    def __init__(self, view: View) -> None:
        self.view = view

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.view.apply_async(fn, *args, **kwargs)

    def map(self, fn: Any, *iterables: Any, timeout: float | None = None, chunksize: int = 1) -> Iterator[Any]:
        if isinstance(self.view, LoadBalancedView):
            return self.view.imap(fn, *iterables)
        return iter(self.view.map_sync(fn, *iterables))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if wait:
            self.view.wait()


def _warn_mpi_subset(view: DirectView, targets: Any) -> None:
    """MPISubsetWarning when code goes to part of an MPI job (a collective there would hang)."""
    if not view.client._mpi_engines:
        return  # the common case, checked in O(1)
    from ..mpi import warn_if_subset

    warn_if_subset(view.client, view._target_list(targets), stacklevel=3)
