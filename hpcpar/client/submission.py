"""Sending tasks and turning their replies into results (or errors).

A mixin of Client: builds request messages (large buffers through shared
memory for engines on this host), tracks them, and decodes the replies.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any

from .. import datapub, serialize, sharedmem, targetset, wire
from ..engine.builtins import map_chunk
from ..error import remote_error
from .asyncresult import AsyncResult, Metadata, _ts, raise_failures
from .execute_reply import ExecuteReply


class _ShmFiles:
    """A request's shared-memory files, and how many of its targets have not answered."""

    __slots__ = ("paths", "remaining")

    def __init__(self, paths: list[Path], remaining: int) -> None:
        self.paths = paths
        self.remaining = remaining


class Results(dict):
    """``Client.results``: replies are decoded when first read, not in the thread that
    receives them; reading this dict (a key, ``in``, ``get``, iterating) decodes the replies
    that have arrived, so it shows every finished result as ipyparallel's eager one does."""

    def __init__(self, client: Submission) -> None:
        super().__init__()
        self._client = client

    def _settle(self, key: Any = None) -> None:
        client = self._client
        with client._lock:
            if key is None:
                waiting = list(client._replies)
            else:  # one lookup, not a scan of every reply waiting to be decoded
                waiting = [key] if key in client._replies else []
        for mid in waiting:
            client._result(mid)

    def __missing__(self, key: Any) -> Any:
        self._settle(key)
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if dict.__contains__(self, key):
            return True
        self._settle(key)
        return dict.__contains__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def __iter__(self):
        self._settle()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._settle()
        return dict.__len__(self)

    def __eq__(self, other: object) -> bool:
        self._settle()
        return dict.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        self._settle()
        return dict.__repr__(self)

    def keys(self):
        self._settle()
        return dict.keys(self)

    def values(self):
        self._settle()
        return dict.values(self)

    def items(self):
        self._settle()
        return dict.items(self)

    def copy(self) -> dict[str, Any]:
        self._settle()
        return dict(dict.items(self))


class Submission:
    """Client methods for submitting requests and collecting their results."""

    def _on_task_reply(self, msg_id: str, msg: wire.Message) -> None:
        h, m = msg.header, msg.meta
        self._release_shm(msg_id)
        self._sent.done(msg_id)
        buffers = msg.buffers
        if m.get("shm") is not None:
            try:
                if h.get("client") != self.session:
                    # Another client's task we asked for: its files are that client's to read and remove.
                    raise sharedmem.SharedMemoryError(
                        "it went through shared memory to the client that submitted the task, which alone "
                        "receives it (and the hub does not store it); ask that client, or submit with "
                        "Client(shared_memory=False)")
                buffers = sharedmem.attach(buffers, m["shm"], self._shm_prefix, remove=True)
            except sharedmem.SharedMemoryError as e:
                m = {**m, **wire.failure_meta("SharedMemoryError", f"the result could not be read: {e}")}
        md = self.metadata.get(msg_id)
        if md is None:
            md = self.metadata[msg_id] = Metadata(msg_id=msg_id)
        md.update(
            engine_id=h.get("engine_id"),
            engine_uuid=(m.get("engine_info") or {}).get("engine_uuid"),
            started=_ts(h.get("started")),
            completed=_ts(h.get("completed")),
            received=_ts(time.time()),
            status=m.get("status", h.get("status")),
            stdout=m.get("stdout", ""),
            stderr=m.get("stderr", ""),
            execute_result=m.get("execute_result"),
            outputs=datapub.take_data(m.get("outputs") or [], md["data"]),
        )
        if "execution_count" in m:
            md["execution_count"] = m["execution_count"]
        if m.get("status") == "error":
            md["error"] = {k: m.get(k) for k in ("ename", "evalue", "traceback")}
        with self._lock:  # self._cond's lock; a plain `with` skips Condition's Python-level __enter__
            self._replies[msg_id] = (m, msg.payload, buffers)
            self.outstanding.discard(msg_id)
            waiting = self._pending.pop(msg_id, ())
            self._cond.notify_all()
        for ar in waiting:
            ar._msg_done(msg_id)

    # -- results -------------------------------------------------------------------------

    def _result(self, msg_id: str) -> Any:
        """The result of one message (an exception object for a failure)."""
        with self._lock:
            if dict.__contains__(self.results, msg_id):  # not Results.__contains__, which calls here
                return dict.__getitem__(self.results, msg_id)
            raw = self._replies.pop(msg_id, None)
        if raw is None:
            if msg_id in self.outstanding:
                raise KeyError(f"no result for message {msg_id} yet")
            return self._refetch(msg_id)
        meta, payload, buffers = raw
        if meta.get("status") == "ok" and "execution_count" in meta:  # an execute(): see execute_reply.py
            value = ExecuteReply(msg_id, self.metadata.get(msg_id) or Metadata(msg_id=msg_id))
        elif meta.get("status") == "ok":
            try:
                value = serialize.loads(payload, buffers)
            except serialize.SerializationError as e:
                value = e
        else:
            value = self._make_error(meta)
        with self._lock:
            self.results[msg_id] = value
            self._finished.append(msg_id)
            if self.results_limit is not None:
                self._trim_caches()
        return value

    def _refetch(self, msg_id: str) -> Any:
        """A result dropped from this client's caches: fetch it again from the hub."""
        with self._lock:
            self.outstanding.add(msg_id)
            self.metadata.setdefault(msg_id, Metadata(msg_id=msg_id))
        self._fetch([msg_id])
        if not self._wait_msg(msg_id, self.timeout * 3):
            raise TimeoutError(f"the hub did not send the result of {msg_id} back in time")
        return self._result(msg_id)

    def _trim_caches(self) -> None:
        """Keep at most ``results_limit`` finished results (oldest dropped; the hub keeps them)."""
        limit = self.results_limit
        if limit is None:
            return
        while len(self._finished) > limit:
            old = self._finished.popleft()
            if old not in self.outstanding:
                self.results.pop(old, None)
                self.metadata.pop(old, None)

    @staticmethod
    def _make_error(meta: dict[str, Any]) -> BaseException:
        """A RemoteError; for failures hpcpar reports itself (engine gone, dependencies, timeouts,
        aborts) one that is also EngineError, ImpossibleDependency... (see error.remote_error)."""
        ename = meta.get("ename") or "UnknownError"
        evalue = meta.get("evalue") or ""
        info = meta.get("engine_info") or {}
        own = meta.get("origin") == "hpcpar"
        if own and ename == "SharedMemoryError":
            err = sharedmem.SharedMemoryError(evalue)
            err.engine_info = info  # type: ignore[attr-defined]
            return err
        return remote_error(ename, evalue, meta.get("traceback") or [], info, own=own)

    def _wait_msg(self, msg_id: str, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: msg_id not in self.outstanding, timeout)

    def _wait_any(self, msg_ids: list[str]) -> list[str]:
        with self._cond:
            self._cond.wait_for(lambda: any(m not in self.outstanding for m in msg_ids))
            return [m for m in msg_ids if m not in self.outstanding]

    # -- submitting ---------------------------------------------------------------------------

    def _submit(
        self,
        msg_type: str,
        *,
        route: str,
        targets: list[int] | None = None,
        meta: dict[str, Any] | None = None,
        obj: Any = None,
        ar_factory: Any = None,
        header_extra: dict[str, Any] | None = None,
    ) -> tuple[list[str], list[Any], dict[str, Any]]:
        """Build one message (for several targets when ``route='direct'``).
        Returns (msg_ids, frames); the caller registers and sends."""
        if msg_type == "apply_request" and type(obj) is tuple and len(obj) == 3:
            # The function's name goes into the hub's task record (db_query's 'fname'; the dashboard).
            f = obj[1][0] if obj[0] is map_chunk and obj[1] else obj[0]
            header_extra = {**(header_extra or {}), "fname": getattr(f, "__name__", None) or type(f).__name__}
            if self._pickler == "cloudpickle":
                obj = (self._functions.wrap(obj[0]), *obj[1:])  # an unchanged function is not pickled again
        payload, buffers = serialize.dumps(obj, self._pickler) if obj is not None else (b"", [])
        extra = header_extra or {}
        paths: list[Path] = []
        if self._shm_key is not None:
            # In the header, which every hop reads anyway: an engine on this host may answer
            # through shm, and a request with nothing else in its meta sends the empty one.
            extra = {**extra, "shm_key": self._shm_key}
            if buffers and self._all_local(targets if route == "direct" else extra.get("lb_targets")):
                buffers, descriptors, paths = sharedmem.export(buffers, self._shm_prefix, self._shm_limit)
                if descriptors:
                    meta = {**(meta or {}), "shm": descriptors}
                    # Tells the hub not to store it (the files go away), and the load
                    # balancer to give it only to engines on this host (shm_key).
                    extra["shm"] = True
        if route == "direct":
            targets = list(targets or [])
            if len(targets) > 1 and len(set(targets)) != len(targets):
                twice = sorted(t for t, n in collections.Counter(targets).items() if n > 1)
                raise ValueError(f"targets name engine(s) {twice} more than once; "
                                 "a direct request runs once per engine: list each engine once")
            # The header stays O(1) in the number of targets (hpcpar/targetset.py): each
            # engine derives its own msg_id from the base, and runs of ids travel as ranges.
            header = self._signer.header(msg_type, route="direct", targets=targetset.compact(targets),
                                         pickler=self._pickler, **extra)
            msg_ids = [targetset.task_id(header["msg_id"], t) for t in targets]
        else:
            header = self._signer.header(msg_type, route=route, pickler=self._pickler, **extra)
            msg_ids = [header["msg_id"]]
        if paths:
            files = _ShmFiles(paths, len(msg_ids))
            with self._lock:
                for mid in msg_ids:
                    self._shm_files[mid] = files
        frames = self._signer.pack(header, meta, payload, buffers)
        return msg_ids, frames, header

    def _all_local(self, targets: list[int] | None) -> bool:
        """Every engine that may get the request shares this host (None: any engine)."""
        with self._lock:
            engines = (list(self._engines.values()) if targets is None
                       else [self._engines.get(t) or {} for t in targets])
        return bool(engines) and all(e.get("host_key") == self._shm_key for e in engines)

    def _release_shm(self, msg_id: str) -> None:
        """A final reply arrived: the request's files go once every target has answered."""
        if msg_id not in self._shm_files:
            return  # the common case, without the lock: entries are added before their request is sent
        with self._lock:
            files = self._shm_files.pop(msg_id, None)
            if files is None:
                return
            files.remaining -= 1
            done = files.remaining <= 0
        if done:
            sharedmem.unlink(files.paths)

    def _track(self, msg_ids: list[str], header: dict[str, Any], ar: AsyncResult | None,
               targets: Any = None) -> None:
        submitted = _ts(header["date"])
        with self._lock:
            for i, mid in enumerate(msg_ids):
                md = Metadata(msg_id=mid, submitted=submitted, label=header.get("label"))
                if header.get("after") or header.get("follow"):  # dependencies, as ipyparallel records them
                    md["after"], md["follow"] = header.get("after"), header.get("follow")
                if isinstance(targets, list) and i < len(targets):
                    md["engine_id"] = targets[i]
                self.metadata[mid] = md
                self.outstanding.add(mid)
                if ar is not None:
                    self._pending.setdefault(mid, []).append(ar)
                self.history.append(mid)

    def _send_tracked(self, msg_ids, frames, header, ar: AsyncResult | None, targets: Any = None) -> Any:
        """Register and send a request; ``ar`` (None for a blocking call, see
        ``_wait_results``) is told as its messages finish."""
        self._track(msg_ids, header, ar, targets)
        self._sent.keep(msg_ids, frames, header)  # resend.py
        self._send(frames)
        return ar

    def _wait_results(self, msg_ids: list[str], single: bool, fname: str) -> Any:
        """What a blocking call returns, as ``AsyncResult.get()`` would: nobody sees an
        AsyncResult of a blocking call, so none is made (no Future to set up, set and
        wait on, a good part of the client's work in a small blocking apply)."""
        outstanding = self.outstanding
        if len(msg_ids) == 1:
            mid = msg_ids[0]

            def done() -> bool:
                return mid not in outstanding
        else:
            def done() -> bool:
                return outstanding.isdisjoint(msg_ids)

        self._receive_until(done, None)
        if not done():  # another thread receives for everyone: wait for its deliveries
            with self._cond:
                self._cond.wait_for(done)
        results = [self._result(m) for m in msg_ids]
        raise_failures(results, single, fname)
        return results[0] if single else results
