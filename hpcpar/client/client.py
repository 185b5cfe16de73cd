"""Client: a connection to one cluster's controller.

All traffic goes through one socket to the controller's client port (see
transport.py), so a single forwarded port is enough to work from a laptop.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from .. import serialize, sharedmem, targetset, wire
from ..connection import ConnectionFileError, ConnectionInfo
from ..error import (
    DependencyTimeout,
    EngineError,
    HpcparError,
    ImpossibleDependency,
    KernelError,
    NoEnginesRegistered,
    RemoteError,
    TaskAborted,
    TaskTimeout,
)
from ..paths import ProfileDir
from .asyncresult import AsyncResult, Metadata, _ts, raise_failures
from .hubqueries import HubQueries
from .transport import REJECTED, Transport

log = logging.getLogger("hpcpar.client")

# Failures the controller or engine reports on its own behalf map to these classes.
_OWN_ERRORS: dict[str, type[KernelError]] = {
    "EngineError": EngineError,
    "TaskAborted": TaskAborted,
    "TaskTimeout": TaskTimeout,
    "ImpossibleDependency": ImpossibleDependency,
    "DependencyTimeout": DependencyTimeout,
    "SharedMemoryError": sharedmem.SharedMemoryError,
}


class _ShmFiles:
    """A request's shared-memory files, and how many of its targets have not answered."""

    __slots__ = ("paths", "remaining")

    def __init__(self, paths: list[Path], remaining: int) -> None:
        self.paths = paths
        self.remaining = remaining


class ConnectionRejected(HpcparError):
    """The controller refused this client's messages (wrong key)."""


class Client(HubQueries):
    """A connection to a running cluster.

    ``Client()`` uses the default profile; also ``Client("path/client.json")``,
    ``Client(url_file=...)``, ``Client(profile="x")`` or a dict of connection
    info. ``timeout`` bounds the wait for the connection file and the
    controller's first answer. ``shared_memory=False`` (or
    ``$HPCPAR_SHARED_MEMORY=0``) sends large buffers through the controller
    even to engines on this host.
    """

    block = False

    def __init__(
        self,
        connection_info: str | os.PathLike | dict | None = None,
        *,
        url_file: str | os.PathLike | None = None,
        profile: str | None = None,
        profile_dir: str | os.PathLike | None = None,
        cluster_id: str | None = None,
        timeout: float = 10,
        sshserver: str | None = None,
        sshkey: str | None = None,
        results_limit: int | None = None,
        shared_memory: bool = True,
        **kwargs: Any,
    ) -> None:
        if "url_or_file" in kwargs:
            url_file = kwargs.pop("url_or_file")
        kwargs.pop("debug", None)
        ssh_options = {k: kwargs.pop(k) for k in ("paramiko", "password", "ssh_config") if k in kwargs}
        kwargs.pop("context", None)
        if kwargs:
            raise TypeError(f"Client() got unexpected arguments: {', '.join(sorted(kwargs))}")
        self.timeout = timeout
        self._tunnel: Any = None
        if sshserver or sshkey or ssh_options:
            from ..ssh.client import tunnel_for_client

            self._info, self._source, self._tunnel = tunnel_for_client(
                sshserver, sshkey, ssh_options, connection_info, url_file, profile, profile_dir, cluster_id, timeout
            )
        else:
            self._info, self._source = self._resolve(connection_info, url_file, profile, profile_dir, cluster_id, timeout)
        self._signer = wire.Signer(self._info.key_bytes)
        self.session = self._signer.session
        self._pickler = "cloudpickle"
        # Large buffers to and from engines on this host go through /dev/shm (sharedmem.py).
        self._shm_key = sharedmem.host_key() if shared_memory else None
        self._shm_prefix = sharedmem.cluster_prefix(self._info.cluster_id, self._info.key_bytes)
        self._shm_limit = sharedmem.threshold()
        self._shm_files: dict[str, _ShmFiles] = {}  # msg_id -> the request files it still needs
        self._functions = serialize.FunctionCache()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._engines: dict[int, dict[str, Any]] = {}
        self._mpi_engines = 0  # how many registered engines belong to an MPI job
        self._requests: dict[str, concurrent.futures.Future] = {}
        self._pending: dict[str, list[AsyncResult]] = {}
        self._replies: dict[str, tuple[dict[str, Any], Any, list[Any]]] = {}
        self._rejected: str | None = None
        self._closed = False
        # Called as callback(msg_id, engine_id, name, text) for live output.
        self._stream_callbacks: list[Any] = []
        # Called as callback(msg_id, engine_id, output, index) for live rich output.
        self._display_callbacks: list[Any] = []
        self.results: dict[str, Any] = {}
        self.metadata: dict[str, Metadata] = {}
        # Bound on finished results kept here (None: keep all until purged); dropped
        # ones are fetched again from the hub when asked for.
        self.results_limit = results_limit
        self._finished: collections.deque[str] = collections.deque()
        self.history: list[str] = []
        self.outstanding: set[str] = set()
        self._transport: Transport | None = None
        try:
            self._connect(timeout)
        except BaseException:
            if self._tunnel is not None:
                self._tunnel.close()
            raise

    # -- connecting --------------------------------------------------------------------

    @staticmethod
    def _resolve(connection_info, url_file, profile, profile_dir, cluster_id, timeout) -> tuple[ConnectionInfo, str]:
        if isinstance(connection_info, dict):
            return ConnectionInfo.from_dict(connection_info, "connection_info dict"), "connection_info dict"
        path = connection_info or url_file
        if path is not None:
            text = str(path)
            if text.startswith("tcp://"):
                raise ConnectionFileError(
                    f"{text!r} is a URL; pass the path of the cluster's client connection file "
                    "(<profile>/security/hpcpar-client.json), which also holds the key"
                )
            p = Path(text).expanduser()
        else:
            pd = ProfileDir(Path(profile_dir)) if profile_dir else ProfileDir.for_profile(profile)
            p = pd.client_file(cluster_id or "")
            if cluster_id is None and not p.exists():
                others = sorted(pd.security.glob("hpcpar-*-client.json")) if pd.security.is_dir() else []
                if len(others) == 1:
                    p = others[0]
        deadline = time.monotonic() + max(0.0, timeout)
        while not p.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return ConnectionInfo.load(p), str(p)

    def _connect(self, timeout: float) -> None:
        urls = self._info.urls
        per_url = timeout if len(urls) == 1 else max(1.0, timeout / len(urls))
        last_error: BaseException | None = None
        for url in urls:
            self._transport = Transport(url, self.session.encode(), self._on_frames, on_reconnect=self._resync)
            try:
                self._request("connect_request", {}, timeout=per_url, first=True)
            except (TimeoutError, ConnectionRejected) as e:
                last_error = e
                self._transport.close()
                self._transport = None
                if isinstance(e, ConnectionRejected):
                    raise
                continue
            self._auto_activate()  # the engine list was taken from the reply as it arrived
            return
        raise TimeoutError(
            f"no controller answered at {', '.join(urls)} within {timeout:.0f} s "
            f"(connection file {self._source}); is the cluster running? Check with 'hpcpar list'"
        ) from last_error

    def _request(self, msg_type: str, meta: dict[str, Any], timeout: float | None = None,
                 first: bool = False) -> wire.Message:
        """A request answered by the controller itself (``first``: sent on the
        receiving socket, so the controller has seen it before it answers)."""
        header = self._signer.header(msg_type, route="controller")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._requests[header["msg_id"]] = fut
        frames = self._signer.pack(header, meta)
        if first:
            if self._transport is None or self._closed:
                raise RuntimeError("this client is closed; create a new hpcpar.Client()")
            self._transport.send_on_receiving_socket(frames)
        else:
            self._send(frames)
        wait = timeout if timeout is not None else self.timeout
        start = time.monotonic()
        self._receive_until(fut.done, wait)
        try:
            return fut.result(None if wait is None else max(0.0, wait - (time.monotonic() - start)))
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"the controller did not answer {msg_type} in time") from None
        finally:
            with self._lock:
                self._requests.pop(header["msg_id"], None)

    def _receive_until(self, done: Any, timeout: float | None) -> None:
        """Wait by receiving on this thread when it can (see transport.py): the
        reply then needs no hand-off from the I/O thread."""
        transport = self._transport
        if transport is not None and not done():
            transport.receive_until(done, timeout)

    def _send(self, frames: list[Any]) -> None:
        if self._transport is None or self._closed:
            raise RuntimeError("this client is closed; create a new hpcpar.Client()")
        self._transport.send(frames)

    # -- the I/O thread's side -------------------------------------------------------------

    def _on_frames(self, frames: list[Any]) -> None:
        if len(frames) == 2 and frames[0].bytes == REJECTED:
            self._on_rejected(frames[1].bytes.decode(errors="replace"))
            return
        try:
            msg = self._signer.unpack(frames)
        except wire.BadMessage as e:
            log.warning("dropped a message from the controller: %s", e)
            return
        mt = msg.msg_type
        if mt == "coalesced_reply":
            # One message carrying every engine's reply to a broadcast; each inner
            # reply keeps its engine's signature and is verified on its own.
            start = 0
            for count in msg.header.get("counts", []):
                self._on_frames(msg.buffers[start : start + count])
                start += count
            return
        parent = msg.header.get("parent")
        if parent is not None:
            fut = self._requests.get(parent)
            if fut is not None:
                if mt == "connect_reply":
                    # Here, in arrival order: an engine_registered right behind the reply
                    # must not be undone by the waiting thread applying an older list.
                    self._set_engines(msg.meta.get("engines", []))
                fut.set_result(msg)
                return
            if mt.endswith("_reply"):
                for msg_id in self._parts_refused(parent) if mt == "error_reply" else [parent]:
                    self._on_task_reply(msg_id, msg)
                return
        if mt == "stream":
            self._on_stream(msg)
        elif mt == "display_data":
            self._on_display(msg)
        elif mt == "engine_registered":
            eng = msg.meta["engine"]
            with self._cond:
                self._engines[int(eng["id"])] = eng
                self._mpi_engines += bool(eng.get("mpi_world"))
                self._cond.notify_all()
        elif mt == "engine_unregistered":
            with self._cond:
                gone = self._engines.pop(int(msg.meta["engine"]["id"]), None)
                self._mpi_engines -= bool(gone and gone.get("mpi_world"))
                self._cond.notify_all()

    def _set_engines(self, engines: list[dict[str, Any]]) -> None:
        with self._cond:
            self._engines = {int(e["id"]): e for e in engines}
            self._mpi_engines = sum(bool(e.get("mpi_world")) for e in engines)
            self._cond.notify_all()

    def _on_stream(self, msg: wire.Message) -> None:
        """Live output of a running request: appended to its metadata as it comes."""
        msg_id = msg.header.get("parent")
        name, text = msg.meta.get("name"), msg.meta.get("text", "")
        if msg_id not in self.outstanding or name not in ("stdout", "stderr"):
            return  # the final reply, with the whole output, already arrived
        md = self.metadata.get(msg_id)
        if md is not None:
            md[name] = md[name] + text
        for callback in list(self._stream_callbacks):
            try:
                callback(msg_id, msg.header.get("engine_id"), name, text)
            except Exception:
                log.exception("a stream callback failed")

    def _on_display(self, msg: wire.Message) -> None:
        """Live rich output (display()) of a running request."""
        msg_id = msg.header.get("parent")
        output = msg.meta.get("output")
        md = self.metadata.get(msg_id)
        if msg_id not in self.outstanding or md is None or not isinstance(output, dict):
            return
        md["outputs"] = md["outputs"] + [output]
        for callback in list(self._display_callbacks):
            try:
                callback(msg_id, msg.header.get("engine_id"), output, len(md["outputs"]) - 1)
            except Exception:
                log.exception("a display callback failed")

    def _on_rejected(self, reason: str) -> None:
        self._rejected = (
            f"the controller at {self._transport.url if self._transport else '?'} rejected this "
            f"client's messages ({reason}). The key in {self._source} does not match the running "
            "cluster: it was probably restarted; use its current connection file"
        )
        with self._lock:
            futures = list(self._requests.values())
        for fut in futures:
            if not fut.done():
                fut.set_exception(ConnectionRejected(self._rejected))

    def _parts_refused(self, parent: str) -> list[str]:
        """The controller refused a whole direct request (answering its base msg_id): each
        target's part fails with that error, so no AsyncResult waits for ever."""
        prefix = parent + targetset.SEPARATOR
        with self._lock:
            if parent in self.outstanding:
                return [parent]
            return [m for m in self.outstanding if m.startswith(prefix)] or [parent]

    def _on_task_reply(self, msg_id: str, msg: wire.Message) -> None:
        h, m = msg.header, msg.meta
        self._release_shm(msg_id)
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
            outputs=m.get("outputs") or [],
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
            if msg_id in self.results:
                return self.results[msg_id]
            raw = self._replies.pop(msg_id, None)
        if raw is None:
            if msg_id in self.outstanding:
                raise KeyError(f"no result for message {msg_id} yet")
            return self._refetch(msg_id)
        meta, payload, buffers = raw
        if meta.get("status") == "ok":
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
        ename = meta.get("ename") or "UnknownError"
        evalue = meta.get("evalue") or ""
        info = meta.get("engine_info") or {}
        own = _OWN_ERRORS.get(ename) if meta.get("origin") == "hpcpar" else None
        if own is EngineError:
            return EngineError(evalue, info)
        if own is not None:
            err = own(evalue)
            err.engine_info = info  # type: ignore[attr-defined]
            return err
        return RemoteError(ename, evalue, meta.get("traceback") or [], info)

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
        if msg_type == "apply_request" and self._pickler == "cloudpickle" and type(obj) is tuple and len(obj) == 3:
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

    # -- engines ---------------------------------------------------------------------------------

    @property
    def ids(self) -> list[int]:
        with self._lock:
            return sorted(self._engines)

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self):
        for eid in self.ids:
            yield self[eid]

    def _build_targets(self, targets: Any) -> list[int]:
        if type(targets) is int and targets in self._engines:
            return [targets]  # the common case (rc[i]) without sorting every id
        ids = self.ids
        if targets is None or targets == "all":
            if not ids:
                raise NoEnginesRegistered()
            return ids
        if isinstance(targets, int):
            targets = [targets]
        elif isinstance(targets, range):
            targets = list(targets)
        elif isinstance(targets, slice):
            targets = ids[targets]
        targets = list(targets)
        missing = [t for t in targets if t not in self._engines]
        if missing:
            raise IndexError(f"engine(s) {missing} are not registered; registered ids: {ids}")
        return targets

    def __getitem__(self, key: Any):
        from .view import DirectView

        ids = self.ids
        if isinstance(key, int):
            if not ids:
                raise NoEnginesRegistered()
            if key < 0:
                key = ids[key]
            if key not in ids:
                raise IndexError(f"no engine with id {key}; registered ids: {ids}")
            return DirectView(self, key)
        if isinstance(key, slice):
            if not ids:
                raise NoEnginesRegistered()
            return DirectView(self, ids[key])
        if isinstance(key, (list, tuple, range)):
            return DirectView(self, self._build_targets(list(key)))
        raise TypeError(f"index a Client with an int, slice, list or range, not {type(key).__name__}")

    def direct_view(self, targets: Any = "all", **kwargs: Any):
        from .view import DirectView

        return DirectView(self, targets, **kwargs)

    def broadcast_view(self, targets: Any = "all", is_coalescing: bool = False, **kwargs: Any):
        """For ipyparallel compatibility: every DirectView already sends one message for
        all targets; ``is_coalescing`` also brings the replies back as one message."""
        return self.direct_view(targets, coalesce=True if is_coalescing else None, **kwargs)

    def load_balanced_view(self, targets: Any = None, **kwargs: Any):
        from .view import LoadBalancedView

        return LoadBalancedView(self, targets, **kwargs)

    def executor(self, targets: Any = None):
        return self.load_balanced_view(targets).executor()

    def wait_for_engines(
        self,
        n: int | None = None,
        *,
        timeout: float = -1,
        block: bool = True,
        interactive: bool | None = None,
        widget: bool | None = None,
    ) -> Any:
        """Wait until at least ``n`` engines are registered, with a progress bar
        (a widget in a notebook, tqdm on a terminal, plain lines otherwise)."""
        from ..progress import Progress

        if n is None:
            n = len(self.ids) or 1
        if not block:
            pool = concurrent.futures.ThreadPoolExecutor(1)
            fut = pool.submit(self.wait_for_engines, n, timeout=timeout, block=True, interactive=False)
            pool.shutdown(wait=False)
            return fut
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        with Progress(total=n, desc="engines", unit="engine", enabled=interactive, widget=widget) as bar:
            with self._cond:
                while len(self._engines) < n:
                    bar.update_to(len(self._engines))
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(
                            f"{len(self._engines)} of {n} engines registered after {timeout} s; "
                            "check the engines' logs in <profile>/log/ (or the batch job output)"
                        )
                    self._cond.wait(0.2 if remaining is None else min(0.2, remaining))
                bar.update_to(len(self._engines))

    # -- waiting -----------------------------------------------------------------------------------

    def _msg_ids_of(self, jobs: Any) -> list[str]:
        if jobs is None:
            with self._lock:
                return list(self.outstanding)
        if isinstance(jobs, (str, int, AsyncResult)):
            jobs = [jobs]
        out: list[str] = []
        for job in jobs:
            if isinstance(job, AsyncResult):
                out.extend(job.msg_ids)
            elif isinstance(job, int):
                out.append(self.history[job])
            elif isinstance(job, str):
                out.append(job)
            else:
                raise TypeError(f"cannot wait on {job!r}: give msg_ids, AsyncResults or history indices")
        return out

    def wait(self, jobs: Any = None, timeout: float = -1) -> bool:
        """Wait for msg_ids / AsyncResults / history indices; True if all finished."""
        msg_ids = self._msg_ids_of(jobs)
        deadline = None if timeout is None or timeout < 0 else timeout
        with self._cond:
            return self._cond.wait_for(lambda: not any(m in self.outstanding for m in msg_ids), deadline)

    def spin(self) -> None:
        """A no-op kept for ipyparallel compatibility: I/O runs in a background thread."""

    def spin_thread(self, interval: float = 1) -> None:
        """A no-op kept for ipyparallel compatibility."""

    # -- control -----------------------------------------------------------------------------------

    def abort(self, jobs: Any = None, targets: Any = None, block: bool | None = None,
              interrupt: bool = False) -> Any:
        """Drop queued tasks: they fail with TaskAborted and never run. With
        ``interrupt=True``, tasks already running are interrupted too (SIGINT on
        their engine: KeyboardInterrupt in the task, and the engine keeps serving)."""
        msg_ids = None if jobs is None else self._msg_ids_of(jobs)
        target_list = None if targets is None else self._build_targets(targets)
        return self._request("abort_request", {"msg_ids": msg_ids, "targets": target_list,
                                               "interrupt": interrupt}).meta

    def queue_status(self, targets: Any = "all", verbose: bool = False) -> dict[Any, Any]:
        target_list = self._build_targets(targets) if self.ids or targets not in (None, "all") else []
        reply = self._request("queue_status_request", {"targets": target_list, "verbose": verbose})
        status = reply.meta["status"]
        out: dict[Any, Any] = {int(k): v for k, v in status.items() if k != "unassigned"}
        out["unassigned"] = status["unassigned"]
        if isinstance(targets, int):
            return out.get(targets, {})
        return out

    def _direct(self, msg_type: str, targets: Any, meta: dict[str, Any] | None = None, obj: Any = None,
                block: bool | None = None) -> Any:
        target_list = self._build_targets(targets)
        msg_ids, frames, header = self._submit(msg_type, route="direct", targets=target_list, meta=meta, obj=obj)
        ar = AsyncResult(self, msg_ids, fname=msg_type.removesuffix("_request"), targets=target_list,
                         single=isinstance(targets, int))
        self._send_tracked(msg_ids, frames, header, ar, target_list)
        if self.block if block is None else block:
            return ar.get()
        return ar

    def clear(self, targets: Any = None, block: bool | None = None) -> Any:
        """Reset the engines' namespaces."""
        return self._direct("clear_request", targets, block=block)

    def send_signal(self, sig: int | str, targets: Any = None, block: bool | None = None) -> Any:
        """Send a signal (e.g. SIGINT, to interrupt running code) to engine processes."""
        return self._direct("signal_request", targets, meta={"signal": sig}, block=block)

    def shutdown(self, targets: Any = "all", restart: bool = False, hub: bool = False,
                 block: bool | None = None) -> None:
        """Stop engines; with ``hub=True`` also the controller."""
        if restart:
            raise NotImplementedError("restarting engines is done by the launcher: hpcpar engines -n N")
        if self.ids:
            ar = self._direct("shutdown_request", targets, block=False)
            if block or hub or (block is None and self.block):
                ar.wait(10)
        if hub:
            self._request("hub_shutdown_request", {})

    def purge_local_results(self, jobs: Any = (), targets: Any = ()) -> None:
        """Forget finished results held by this client (all with jobs='all')."""
        with self._lock:
            if jobs == "all":
                msg_ids = [m for m in self.metadata if m not in self.outstanding]
            else:
                msg_ids = self._msg_ids_of(list(jobs)) if jobs else []
                if targets:
                    wanted = set(self._build_targets(targets))
                    msg_ids += [m for m, md in self.metadata.items() if md["engine_id"] in wanted]
            for mid in msg_ids:
                if mid in self.outstanding:
                    raise RuntimeError(f"cannot purge {mid}: it has not finished")
                self.results.pop(mid, None)
                self.metadata.pop(mid, None)
                self._replies.pop(mid, None)
            if jobs == "all":
                self.history = [m for m in self.history if m in self.outstanding]

    # -- lifecycle ----------------------------------------------------------------------------------

    # -- IPython ------------------------------------------------------------------------------------

    def activate(self, targets: Any = "all", suffix: str = ""):
        """Make ``%px``, ``%%px``, ``%autopx``, ``%pxresult`` and ``%pxconfig``
        (each name + ``suffix``) run on a blocking DirectView of ``targets``."""
        view = self.direct_view(targets)
        view.block = True
        view.activate(suffix)
        return view

    def _auto_activate(self) -> None:
        # As in ipyparallel: a Client made inside IPython gets the %px magics,
        # unless they already point at another live client.
        if "IPython" not in __import__("sys").modules:
            return
        try:
            from .magics import auto_activate

            auto_activate(self)
        except Exception:
            log.debug("could not register the %px magics", exc_info=True)

    def close(self, linger: float | None = None) -> None:
        if self._closed:
            return
        with self._lock:
            leftover = {id(f): f for f in self._shm_files.values()}
            self._shm_files.clear()
        for files in leftover.values():
            sharedmem.unlink(files.paths)
        if self._transport is not None:
            try:
                header = self._signer.header("disconnect_request", route="controller")
                self._transport.send(self._signer.pack(header))
            except Exception:
                pass
            self._transport.close()
        self._closed = True
        if self._tunnel is not None:
            self._tunnel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<hpcpar.Client {self._source}: {len(self._engines)} engines>"

    # -- serializer ------------------------------------------------------------------------------------

    def use_cloudpickle(self) -> None:
        self._pickler = "cloudpickle"

    def use_pickle(self) -> None:
        self._pickler = "pickle"
