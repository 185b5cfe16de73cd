"""DirectView: work on the engines you name."""

from __future__ import annotations

import builtins
import collections
import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine import builtins as engine_builtins
from . import partition
from .asyncresult import AsyncMapResult, AsyncResult
from .lowlevel import MUX
from .view import View, _fname, check_callable

if TYPE_CHECKING:
    from .client import Client


class DirectView(View):
    """Runs work on the engines you name. One message reaches every target; for a
    blocking call (or always, with ``coalesce=True``) their replies come back as one message."""

    _socket = MUX  # ipyparallel's view._socket, for Client.send_apply_request

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
        waiting = block if wait is None else wait
        single, name = self._single(targets), fname or msg_type
        rounds = _rounds(target_list)
        if len(rounds) > 1:
            return self._call_rounds(msg_type, rounds, target_list, obj, meta, name, single, coalesce, waiting)
        extra = {"label": self.label, "coalesce": coalesce and len(target_list) > 1}
        msg_ids, frames, header = client._submit(msg_type, route="direct", targets=target_list, meta=meta,
                                                 obj=obj, header_extra=extra)
        if waiting:
            return self._send_and_wait(msg_ids, frames, header, single, name, target_list)
        ar = AsyncResult(client, msg_ids, fname=name, targets=target_list, single=single)
        client._send_tracked(msg_ids, frames, header, ar, target_list)
        return self._record(ar)

    def _call_rounds(self, msg_type: str, rounds: list[list[int]], target_list: list[int], obj: Any,
                     meta: dict | None, name: str, single: bool, coalesce: bool | None, waiting: bool) -> Any:
        """Targets naming an engine more than once (``rc[[0, 0]]``): it runs the call once
        per mention, as in ipyparallel. Each round is one message to engines named in it;
        results come back in the order of ``target_list``."""
        client = self.client
        sent = []
        ids_of: dict[tuple[int, int], str] = {}
        for r, round_targets in enumerate(rounds):
            extra = {"label": self.label, "coalesce": bool(coalesce) and len(round_targets) > 1}
            ids, frames, header = client._submit(msg_type, route="direct", targets=round_targets, meta=meta,
                                                 obj=obj, header_extra=extra)
            sent.append((ids, frames, header, round_targets))
            ids_of.update({(t, r): mid for t, mid in zip(round_targets, ids)})
        mentions: collections.Counter[int] = collections.Counter()
        msg_ids = []
        for t in target_list:
            msg_ids.append(ids_of[(t, mentions[t])])
            mentions[t] += 1
        ar = None if waiting else AsyncResult(client, msg_ids, fname=name, targets=target_list, single=single)
        for ids, frames, header, round_targets in sent:
            client._send_tracked(ids, frames, header, ar, round_targets)
        if ar is not None:
            return self._record(ar)
        self.history.extend(msg_ids)
        return client._wait_results(msg_ids, single, name)

    def _per_engine(self, target_list: list[int], objs: list[Any], fname: str, block: bool | None,
                    joiner: Any = None, n_items: int | None = None, **map_options: Any) -> Any:
        """One apply per engine (``objs[i]`` to ``target_list[i]``), results joined as one
        AsyncMapResult: the shape of map, scatter, gather and parallel functions."""
        client = self.client
        msg_ids: list[str] = []
        batches = []
        for eid, obj in zip(target_list, objs):
            ids, frames, header = client._submit("apply_request", route="direct", targets=[eid], obj=obj,
                                                 header_extra={"label": self.label})
            msg_ids.extend(ids)
            batches.append((ids, frames, header, eid))
        ar = AsyncMapResult(client, msg_ids, fname=fname, joiner=joiner, n_items=n_items, **map_options)
        for ids, frames, header, eid in batches:
            client._send_tracked(ids, frames, header, ar, [eid])
        self._record(ar)
        return ar.get() if self._block(block) else ar

    def _really_apply(self, f: Any, args: tuple = (), kwargs: dict | None = None, block: bool | None = None,
                      targets: Any = None, track: bool | None = None) -> Any:
        _warn_mpi_subset(self, targets, f)
        return self._call("apply_request", targets, obj=(f, tuple(args), dict(kwargs or {})), fname=_fname(f),
                          block=self._block(block))

    def map(self, f: Any, *sequences: Any, block: bool | None = None, track: bool | None = None,
            return_exceptions: bool = False, targets: Any = None) -> Any:
        """Split the sequences into one contiguous part per engine; ``f`` maps over its part.
        Any iterable works (read once); as with builtin ``map``, the shortest one sets the length."""
        check_callable(f)
        if not sequences:
            raise TypeError("map needs at least one sequence")
        target_list = self._target_list(targets)
        seqs, n_items = partition.aligned(sequences)
        parts = [partition.split(s, len(target_list)) for s in seqs]
        used = [i for i in range(len(target_list)) if len(parts[0][i])]  # fewer items than engines: no empty calls
        objs = [(engine_builtins.map_chunk, (f, *[p[i] for p in parts]), {}) for i in used]
        return self._per_engine([target_list[i] for i in used], objs, _fname(f), block, n_items=n_items,
                                return_exceptions=return_exceptions,
                                chunk_sizes=[len(parts[0][i]) for i in used])

    def execute(self, code: str, silent: bool = True, targets: Any = None, block: bool | None = None) -> AsyncResult:
        """Run code text in each engine's namespace. Returns the AsyncResult
        (after waiting, and raising any error, when blocking)."""
        if not isinstance(code, str):
            raise TypeError(f"execute takes code as text (a str), not {type(code).__name__}")
        _warn_mpi_subset(self, targets, code)
        block = self._block(block)
        ar = self._send("execute_request", targets, meta={"code": code, "silent": silent}, fname="execute",
                        block=block)
        for md in ar._metadata_list():  # the same Metadata objects the replies fill in
            md["execute_input"] = code
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

    def get(self, key_s: str | list[str] | tuple[str, ...]) -> Any:
        """The value(s) of names on the engines; always waits (``pull`` follows ``block``)."""
        return self.pull(key_s, block=True)

    def __setitem__(self, key: str, value: Any) -> None:
        self.push({key: value}, block=True)

    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str):
            raise TypeError("index a DirectView with a variable name, e.g. view['x']")
        return self.pull(key, block=True)

    def scatter(self, key: str, seq: Any, dist: str = "b", flatten: bool = False, targets: Any = None,
                block: bool | None = None, track: bool | None = None) -> Any:
        """Partition ``seq`` across the engines and push each part as ``key``."""
        target_list = self._target_list(targets)
        parts = partition.split(seq, len(target_list), partition.check_dist(dist))
        objs = [(engine_builtins.push, ({key: part[0] if flatten and len(part) == 1 else part},), {})
                for part in parts]
        return self._per_engine(target_list, objs, "scatter", block, joiner=lambda results: None)

    def gather(self, key: str, dist: str = "b", targets: Any = None, block: bool | None = None) -> Any:
        """Pull ``key`` from each engine and join the parts (inverse of scatter)."""
        partition.check_dist(dist)
        target_list = self._target_list(targets)
        objs = [(engine_builtins.pull, (key,), {})] * len(target_list)
        return self._per_engine(target_list, objs, "gather", block,
                                joiner=lambda parts: partition.join(parts, dist))

    def clear(self, targets: Any = None, block: bool | None = None) -> Any:
        return self.client.clear(self._targets if targets is None else targets, block=block)

    def send_signal(self, sig: int | str, targets: Any = None, block: bool | None = None) -> Any:
        return self.client.send_signal(sig, self._targets if targets is None else targets, block=block)

    def activate(self, suffix: str = "") -> None:
        """Make ``%px<suffix>``, ``%%px<suffix>``, ``%autopx<suffix>``,
        ``%pxresult<suffix>`` and ``%pxconfig<suffix>`` run on this view (in IPython).
        Outside IPython (a script) it only warns, as ipyparallel's: scripts that call it still run."""
        try:
            from IPython import get_ipython
        except ImportError:
            shell = None
        else:
            shell = get_ipython()
        if shell is None:
            warnings.warn("the %px magics only work inside IPython or Jupyter: activate() did nothing here",
                          stacklevel=2)
            return
        from .magics import activate

        activate(self, suffix, shell)

    @property
    def importer(self) -> Any:
        """``with view.importer: import numpy`` imports here and on the engines (sync_imports)."""
        return self.sync_imports(True)

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


def _warn_mpi_subset(view: DirectView, targets: Any, code: Any = None) -> None:
    """MPISubsetWarning when code that calls an MPI collective goes to part of an MPI job
    (the collective there would hang); a plain apply on one rank does not warn."""
    if not view.client._mpi_engines:
        return  # the common case, checked in O(1)
    from ..mpi import warn_if_subset

    warn_if_subset(view.client, view._target_list(targets), stacklevel=3, code=code)


def _rounds(targets: list[int]) -> list[list[int]]:
    """``targets`` as rounds in which each engine appears at most once (its k-th
    mention goes to round k); one round, the list itself, when none repeats."""
    if len(targets) < 2 or len(set(targets)) == len(targets):
        return [targets]
    rounds: list[list[int]] = []
    mentions: collections.Counter[int] = collections.Counter()
    for t in targets:
        k = mentions[t]
        mentions[t] += 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(t)
    return rounds
