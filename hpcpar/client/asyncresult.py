"""AsyncResult: a handle on results that are still coming in.

It is a ``concurrent.futures.Future`` (so ``asyncio.wrap_future`` works) over
one or more message ids. Results are unpickled lazily, in the thread that
asks for them, so a result that cannot be unpickled raises there, never in
the client's I/O thread.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..error import CompositeError

if TYPE_CHECKING:
    from .client import Client

_METADATA_KEYS = {
    "msg_id": None,
    "submitted": None,
    "started": None,
    "completed": None,
    "received": None,
    "engine_uuid": None,
    "engine_id": None,
    "follow": None,
    "after": None,
    "status": None,
    "execute_input": None,
    "execute_result": None,
    "error": None,
    "stdout": "",
    "stderr": "",
    "outputs": None,
    "data": None,
    "label": None,
    "execution_count": None,
    "is_broadcast": False,  # sent through a BroadcastView (ipyparallel's keys)
    "is_coalescing": False,
}


_UTC = timezone.utc
_fromtimestamp = datetime.fromtimestamp


def _ts(value: float | None) -> datetime | None:
    return None if value is None else _fromtimestamp(value, _UTC)


class Metadata(dict):
    """Per-message metadata; keys are also attributes (``md.engine_id``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Made for every task: a copy of the defaults (all immutable) and fresh containers.
        super().__init__(_METADATA_KEYS)
        self["outputs"] = []
        self["data"] = {}
        if args or kwargs:
            self.update(*args, **kwargs)

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


def raise_failures(results: list[Any], single: bool, fname: str) -> None:
    """Re-raise the remote failure among a call's results (CompositeError for several messages)."""
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        if single and len(results) == 1:
            raise errors[0]
        raise CompositeError(f"one or more exceptions raised in: {fname}", errors)


def _seconds(delta: Any) -> float:
    return delta.total_seconds() if delta is not None else 0.0


class AsyncResult(concurrent.futures.Future):
    """Results of one call, on one or more engines."""

    def __init__(
        self,
        client: Client,
        msg_ids: list[str],
        fname: str = "unknown",
        targets: Any = None,
        single: bool | None = None,
        return_exceptions: bool = False,
        owner: bool = False,
    ) -> None:
        super().__init__()
        self._client = client
        if isinstance(msg_ids, str) or hasattr(msg_ids, "msg_id"):  # one message, not a list: single
            msg_ids, single = [msg_ids], True if single is None else single
        msg_ids = list(msg_ids)
        # Futures of send_apply_request (ipyparallel's AsyncResult(client, futures)): sent already.
        # Only looked for when the list is not of msg_ids (every submission passes strings).
        sent_already = bool(msg_ids) and not isinstance(msg_ids[0], str) and any(hasattr(m, "msg_id") for m in msg_ids)
        if sent_already:
            msg_ids = [getattr(m, "msg_id", m) for m in msg_ids]
        self.msg_ids = msg_ids
        self._fname = fname
        self._targets = targets
        self._single_result = bool(single)  # a list of msg_ids is not single, even of one (as ipyparallel)
        self._return_exceptions = return_exceptions
        # An owner drops its results and metadata from the client's caches once it has
        # them (ipyparallel's get_result(owner=True)); it keeps its own copies.
        self.owner = owner
        self._owned: set[str] = set(self.msg_ids) if owner else set()  # what release() may drop
        self._own_metadata: list[Metadata] | None = None
        self._own_results: list[Any] | None = None
        self._remaining = set(self.msg_ids)
        self._parts: tuple[AsyncResult, ...] | None = None  # split()'s, made once
        self._result_cache: Any = None
        self._have_result = False
        if not self._remaining:
            super().set_result(None)
        elif sent_already:
            self._attach()

    def _attach(self) -> AsyncResult:
        """Be told when this result's messages finish (for results made after submission:
        split, join, hub results)."""
        client = self._client
        with client._lock:
            waiting = [m for m in self.msg_ids if m in client.outstanding]
            for m in waiting:
                client._pending.setdefault(m, []).append(self)
        for m in set(self.msg_ids).difference(waiting):
            self._msg_done(m)
        return self

    def __repr__(self) -> str:
        state = "finished" if self.ready() else "pending"
        return f"<{type(self).__name__}({self._fname}): {state}>"

    # -- driven by the client's I/O thread -------------------------------------------

    def _msg_done(self, msg_id: str) -> None:
        self._remaining.discard(msg_id)
        if not self._remaining:
            try:  # raises if already finished (or cancelled): cheaper than asking done() first
                super().set_result(None)
            except concurrent.futures.InvalidStateError:
                pass

    # -- waiting -------------------------------------------------------------------

    def ready(self) -> bool:
        return super().done()

    def wait(self, timeout: float | None = -1, return_when: str | None = None) -> Any:
        """Wait up to ``timeout`` seconds (-1 or None: forever).

        Without ``return_when``, returns whether every message is done. With
        ``FIRST_COMPLETED``, ``FIRST_EXCEPTION`` or ``ALL_COMPLETED`` (as for
        ``concurrent.futures.wait``) returns ``(done, pending)``, two sets of the AsyncResults
        of ``split()`` (one per message), as ipyparallel 9 does."""
        if timeout is not None and timeout < 0:
            timeout = None
        if return_when is None or return_when == concurrent.futures.ALL_COMPLETED:
            self._wait_all(timeout)
            if return_when is None:
                return self.ready()
        elif return_when == concurrent.futures.FIRST_COMPLETED:
            self._wait_for(lambda: len(self._done_ids()) > 0 or not self.msg_ids, timeout)
        elif return_when == concurrent.futures.FIRST_EXCEPTION:
            self._wait_for(lambda: self._any_failed() or len(self._done_ids()) == len(self.msg_ids), timeout)
        else:
            raise ValueError(f"return_when must be FIRST_COMPLETED, FIRST_EXCEPTION or ALL_COMPLETED "
                             f"(from concurrent.futures), not {return_when!r}")
        done_ids = self._done_ids()
        parts = self.split()
        done = {p for p in parts if done_ids.issuperset(p.msg_ids)}
        return done, set(parts) - done

    def _wait_all(self, timeout: float | None) -> None:
        if not super().done():
            start = time.monotonic()
            self._client._receive_until(super().done, timeout)
            if timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - start))
        try:
            super().result(timeout)
        except concurrent.futures.TimeoutError:
            pass

    def _wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> None:
        """Receive (or wait for the thread that receives) until ``predicate()`` holds."""
        client = self._client
        start = time.monotonic()
        client._receive_until(predicate, timeout)
        if timeout is not None:
            timeout = max(0.0, timeout - (time.monotonic() - start))
        with client._cond:
            client._cond.wait_for(predicate, timeout)

    def _done_ids(self) -> set[str]:
        outstanding = self._client.outstanding
        return {m for m in self.msg_ids if m not in outstanding}

    def wait_for_output(self, timeout: float | None = -1) -> bool:
        """Wait until the output (stdout, stderr, displays) is complete: it comes with
        each task's reply, so this is when the result is ready."""
        return self.wait(timeout)

    def successful(self) -> bool:
        if not self.ready():  # RuntimeError, as in ipyparallel 9
            raise RuntimeError("cannot check successful() before the result is ready; wait() first")
        return all(not isinstance(self._client._result(m), BaseException) for m in self.msg_ids)

    # -- results -------------------------------------------------------------------

    def _raw_results(self) -> list[Any]:
        if self._own_results is not None:
            return self._own_results
        return [self._client._result(m) for m in self.msg_ids]

    def _reconstruct(self, results: list[Any]) -> Any:
        return results[0] if self._single_result else results

    def get(self, timeout: float | None = -1, return_exceptions: bool | None = None,
            return_when: str | None = None) -> Any:
        """The result(s). Raises builtin TimeoutError if not ready within ``timeout``;
        re-raises a remote failure (RemoteError, or CompositeError for several).

        ``return_exceptions=True`` returns failures in place of their results instead
        (default: as given to ``map(..., return_exceptions=)``). ``return_when=FIRST_EXCEPTION``
        raises as soon as one task failed, without waiting for the others."""
        if return_exceptions is None:
            return_exceptions = self._return_exceptions
        if return_when == concurrent.futures.FIRST_EXCEPTION and not self.ready():
            done, _pending = self.wait(timeout, return_when=return_when)
            if not self.ready():
                done_ids = {m for part in done for m in part.msg_ids}
                failed = [r for r in (self._client._result(m) for m in self.msg_ids if m in done_ids)
                          if isinstance(r, BaseException)]
                if failed:
                    raise_failures(failed, self._single_result, self._fname)
                raise TimeoutError(f"result of {self._fname} not ready after {timeout} s")
        elif return_when not in (None, concurrent.futures.ALL_COMPLETED, concurrent.futures.FIRST_COMPLETED,
                                 concurrent.futures.FIRST_EXCEPTION):
            raise ValueError(f"return_when must be FIRST_EXCEPTION or ALL_COMPLETED, not {return_when!r}")
        if not self.wait(timeout):
            raise TimeoutError(f"result of {self._fname} not ready after {timeout} s")
        if self._have_result:
            return self._result_cache
        results = self._raw_results()
        if return_exceptions:
            return self._reconstruct_with_errors(results)
        raise_failures(results, self._single_result, self._fname)
        self._result_cache = self._reconstruct(results)
        self._have_result = True
        self._release()
        return self._result_cache

    def _reconstruct_with_errors(self, results: list[Any]) -> Any:
        return self._reconstruct(results)

    def _release(self) -> None:
        """For an owner: keep the results and metadata here, drop them from the client."""
        if not self._owned or self._own_metadata is not None:
            return
        client = self._client
        self._own_metadata = self._metadata_list()
        self._own_results = self._raw_results()
        with client._lock:
            for m in self._owned:
                if m not in client.outstanding:
                    client.results.pop(m, None)
                    client.metadata.pop(m, None)
                    client._replies.pop(m, None)

    def result(self, timeout: float | None = None) -> Any:  # concurrent.futures API
        return self.get(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            self.get(timeout)
        except TimeoutError:
            raise
        except BaseException as e:  # noqa: BLE001
            return e
        return None

    @property
    def r(self) -> Any:
        return self.get()

    def get_dict(self, timeout: float | None = -1) -> dict[int, Any]:
        results = self.get(timeout)
        values = [results] if self._single_result else results
        ids = [md["engine_id"] for md in self._metadata_list()]
        if len(set(ids)) != len(ids):
            raise ValueError("cannot build a dict: several results came from the same engine")
        return dict(zip(ids, values))

    @property
    def result_dict(self) -> dict[int, Any]:
        return self.get_dict()

    # -- metadata --------------------------------------------------------------------

    def _metadata_list(self) -> list[Metadata]:
        if self._own_metadata is not None:
            return self._own_metadata
        md = self._client.metadata
        return [md.get(m) or Metadata(msg_id=m) for m in self.msg_ids]

    @property
    def metadata(self) -> Metadata | list[Metadata]:
        mds = self._metadata_list()
        return mds[0] if self._single_result and len(mds) == 1 else mds

    def __getattr__(self, key: str) -> Any:
        if key in _METADATA_KEYS:
            values = [md[key] for md in self._metadata_list()]
            return values[0] if self._single_result and len(values) == 1 else values
        raise AttributeError(f"{type(self).__name__} object has no attribute {key!r}")

    def __getitem__(self, key: Any) -> Any:
        """``ar['stdout']``: metadata (KeyError for a key metadata does not have);
        ``ar[i]`` / ``ar[i:j]``: results, which must be ready (else TimeoutError)."""
        if isinstance(key, str):
            if key not in _METADATA_KEYS:
                raise KeyError(f"{key!r} is not a metadata key; keys: {', '.join(_METADATA_KEYS)}")
            return getattr(self, key)
        if not isinstance(key, (int, slice)):
            raise TypeError(f"index an AsyncResult with an int, a slice or a metadata key, not {key!r}")
        if not self.ready():
            raise TimeoutError(f"result of {self._fname} not ready: wait() first")
        return self.get()[key]

    @property
    def sent(self) -> bool:
        return True

    def wait_for_send(self, timeout: float = -1) -> bool:
        return True

    @property
    def progress(self) -> int:
        """How many of ``len(self)`` are done (tasks; items for a map)."""
        return len(self.msg_ids) - len(self._remaining)

    @property
    def elapsed(self) -> float:
        """Seconds since the first submission (until the last reply, once ready)."""
        if self.ready():
            try:
                return self.wall_time
            except (TypeError, ValueError):
                pass  # times missing (a purged record): fall through
        submitted = [md["submitted"] for md in self._metadata_list() if md["submitted"]]
        if not submitted:
            return 0.0
        return _seconds(datetime.now(timezone.utc) - min(submitted))

    def _check_ready(self, what: str) -> None:
        if not self.ready():
            raise TimeoutError(f"{what} needs a finished result; wait() first")

    @property
    def wall_time(self) -> float:
        """Seconds from the first submission to the last reply (raises TimeoutError until ready)."""
        self._check_ready("wall_time")
        mds = self._metadata_list()
        return _seconds(max(md["received"] for md in mds) - min(md["submitted"] for md in mds))

    @property
    def serial_time(self) -> float:
        """Sum of each task's run time (raises TimeoutError until ready)."""
        self._check_ready("serial_time")
        return sum(
            _seconds(md["completed"] - md["started"])
            for md in self._metadata_list()
            if md["completed"] and md["started"]
        )

    # -- splitting and joining ------------------------------------------------------

    def _like(self, msg_ids: list[str], single: bool, sizes: dict[str, int] | None = None) -> AsyncResult:
        """A result of the same kind over ``msg_ids``, told as they finish (``sizes``: the
        chunk size of each message, for maps)."""
        return AsyncResult(self._client, msg_ids, fname=self._fname, single=single,
                           return_exceptions=self._return_exceptions)._attach()

    def split(self) -> tuple[AsyncResult, ...]:
        """One AsyncResult per message (e.g. for ``concurrent.futures.wait`` or ``as_completed``),
        the same ones at every call; ``(self,)`` for one message."""
        if self._parts is None:
            self._parts = (self,) if len(self.msg_ids) <= 1 else tuple(self._part(m) for m in self.msg_ids)
        return self._parts

    def _part(self, msg_id: str) -> AsyncResult:
        return self._like([msg_id], True)

    @classmethod
    def join(cls, *results: AsyncResult) -> AsyncResult:
        """One AsyncResult over the messages of several (the inverse of ``split``); one is
        returned as it is. ``AsyncMapResult.join`` of a map's parts gives the map back."""
        if not results:
            raise ValueError("join needs at least one AsyncResult: AsyncResult.join(ar1, ar2, ...)")
        first = results[0]
        if len(results) == 1:
            return first
        if any(r._client is not first._client for r in results):
            raise ValueError("cannot join AsyncResults of different clients")
        sizes: dict[str, int] = {}
        for r in results:
            sizes.update(getattr(r, "_chunk_sizes", None) or {})
        msg_ids = [m for r in results for m in r.msg_ids]
        if issubclass(cls, AsyncMapResult):
            proto = first if isinstance(first, AsyncMapResult) else getattr(first, "_map_parent", None)
            if proto is None:
                raise TypeError("AsyncMapResult.join joins parts of maps; use AsyncResult.join for others")
            return proto._like(msg_ids, False, sizes)
        return AsyncResult(first._client, msg_ids, fname=first._fname, single=False,
                           return_exceptions=first._return_exceptions)._attach()

    def timedelta(self, start: Any, end: Any, start_key: Callable = min, end_key: Callable = max) -> float:
        if isinstance(start, list):
            start = start_key(start)
        if isinstance(end, list):
            end = end_key(end)
        return _seconds(end - start)

    # -- other ---------------------------------------------------------------------

    def abort(self, interrupt: bool = False) -> None:
        """Drop these tasks if they have not started; with ``interrupt=True`` also
        interrupt them if they are running. RuntimeError once done (as in ipyparallel 9)."""
        if self.ready():
            raise RuntimeError(f"cannot abort {self._fname}: it is already done")
        self._client.abort(jobs=self.msg_ids, block=True, interrupt=interrupt)

    def display_outputs(self, groupby: str = "type", result_only: bool = False) -> None:
        """Show what the engines printed and displayed, and cell results, with
        ``[stdout:N]`` / ``[stderr:N]`` / ``[output:N]`` / ``Out[N:k]`` labels.

        ``groupby``: ``type`` (all stdout, all stderr, all rich outputs),
        ``engine`` (each engine's outputs together) or ``order`` (like type,
        with the i-th rich output of every engine before the next ones).
        """
        from .output import display_outputs

        display_outputs(self._client, self.msg_ids, groupby=groupby, result_only=result_only)

    def stream_output(self) -> Any:
        """Context manager printing output live while the tasks run::

            with ar.stream_output():
                ar.wait_interactive()
        """
        from .output import StreamPump

        return StreamPump(self._client, self.msg_ids)

    def wait_interactive(self, interval: float = 0.1, timeout: float | None = -1, widget: bool | None = None,
                         return_when: str = concurrent.futures.ALL_COMPLETED) -> bool:
        """Wait with a progress bar (a widget in a notebook, tqdm on a terminal,
        plain lines otherwise). Returns whether the result is ready; gives up
        silently after ``timeout`` seconds (-1 or None: no limit).
        ``return_when=FIRST_EXCEPTION`` stops at the first failed task."""
        from ..progress import Progress

        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        with Progress(len(self.msg_ids), desc=self._fname, unit="task", widget=widget) as bar:
            while not self.ready():
                if return_when == concurrent.futures.FIRST_EXCEPTION and self._any_failed():
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self.wait(interval if remaining is None else min(interval, remaining))
                bar.update_to(self.progress)
            bar.update_to(self.progress)
        return self.ready()

    def _any_failed(self) -> bool:
        for mid in self.msg_ids:
            if mid not in self._remaining:
                md = self._client.metadata.get(mid)
                if md is not None and md["status"] not in (None, "ok"):
                    return True
        return False

    def __len__(self) -> int:
        return len(self.msg_ids)

    def __iter__(self) -> Iterator[Any]:
        """Each engine's result as it is ready, in order. A single result (one engine given
        by id, a load-balanced apply) is not iterable, as in ipyparallel: use ``get()``."""
        if self._single_result:
            raise TypeError("AsyncResults with a single result are not iterable; use ar.get()")
        for msg_id in self.msg_ids:
            yield self._one(msg_id)

    def _one(self, msg_id: str) -> Any:
        self._client._wait_msg(msg_id)
        value = self._client._result(msg_id)
        if isinstance(value, BaseException) and not self._return_exceptions:
            raise value
        return value  # with return_exceptions a failure is given in its place, as in ipyparallel


# AsyncMapResult lives in mapresult.py (one kind of result per module); importable from here too.
from .mapresult import AsyncMapResult  # noqa: E402
