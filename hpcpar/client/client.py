"""Client: a connection to one cluster's controller, its engines and views.

The work is shared with mixins, one job each: channel.py (connecting, and what
the controller sends), submission.py (requests out, results in) and
hubqueries.py (what the hub's task records answer).
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from .. import serialize, sharedmem, wire
from ..error import NoEnginesRegistered, PoolStopped
from .asyncresult import AsyncResult, Metadata
from .channel import Channel, ConnectionRejected
from .hubqueries import HubQueries
from .lowlevel import LowLevelSend
from .resend import SentRequests
from .submission import Results, Submission, _ShmFiles
from .transport import Transport

log = logging.getLogger("hpcpar.client")

__all__ = ["Client", "ConnectionRejected"]


class Client(Channel, Submission, HubQueries, LowLevelSend):
    """A connection to a running cluster.

    ``Client()`` uses the default profile; also ``Client("path/client.json")``,
    ``Client(url_file=...)``, ``Client(profile="x")`` or a dict of connection
    info. ``timeout`` bounds the wait for the connection file and the
    controller's first answer. ``shared_memory=False`` (or
    ``$HPCPAR_SHARED_MEMORY=0``) sends large buffers through the controller
    even to engines on this host.
    """

    block = False
    # The serializer of every client that has not chosen its own (view.use_dill() etc. choose for
    # their client); hpcpar.use_dill() / use_pickle() / use_cloudpickle() set it, process-wide.
    _pickler = "cloudpickle"

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
        cluster: Any = None,
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
        self.cluster = cluster  # the hpcpar.Cluster this client belongs to, when a Cluster made it
        self._tunnel: Any = None
        if sshserver or sshkey or ssh_options:
            from ..ssh.client import tunnel_for_client

            self._info, self._source, self._tunnel = tunnel_for_client(
                sshserver, sshkey, ssh_options, connection_info, url_file, profile, profile_dir, cluster_id, timeout
            )
        else:
            self._info, self._source = self._resolve(connection_info, url_file, profile, profile_dir, cluster_id, timeout)
        self._signer = wire.Signer(self._info.key_bytes, self._info.transport)
        self.session = SessionId(self._signer.session)
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
        self.results: dict[str, Any] = Results(self)  # decodes replies when read
        self.metadata: dict[str, Metadata] = {}
        # Bound on finished results kept here (None: keep all until purged); dropped
        # ones are fetched again from the hub when asked for.
        self.results_limit = results_limit
        self._finished: collections.deque[str] = collections.deque()
        self.history: list[str] = []
        self.outstanding: set[str] = set()
        self._sent = SentRequests()  # requests until their results arrive, for a restored controller
        self._transport: Transport | None = None
        try:
            self._connect(timeout)
        except BaseException:
            if self._tunnel is not None:
                self._tunnel.close()
            raise
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
        if not ids:
            raise NoEnginesRegistered()
        if isinstance(targets, int):
            targets = [ids[targets] if targets < 0 and -len(ids) <= targets else targets]
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
        from .directview import DirectView

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

    def _last_engine(self, targets: Any) -> Any:
        """A negative engine index (``-1``: the last engine) resolved now, as ipyparallel does."""
        if type(targets) is int and targets < 0:
            ids = self.ids
            if not ids:
                raise NoEnginesRegistered()
            if -len(ids) > targets:
                raise IndexError(f"engine index {targets} is out of range; registered ids: {ids}")
            return ids[targets]
        return targets

    def _view_targets(self, targets: Any) -> Any:
        """As ipyparallel's direct_view: ``"all"`` stays lazy (the engines of each call); anything
        else becomes engine ids now (an id stays one id), so an unknown one raises IndexError here."""
        if isinstance(targets, str) and targets == "all":
            return targets
        ids = self._build_targets(targets)
        return ids[0] if isinstance(targets, int) and not isinstance(targets, bool) else ids

    def direct_view(self, targets: Any = "all", **kwargs: Any):
        from .directview import DirectView

        return DirectView(self, self._view_targets(targets), **kwargs)

    def broadcast_view(self, targets: Any = "all", is_coalescing: bool = False, **kwargs: Any):
        """For ipyparallel compatibility: every DirectView already sends one message for
        all targets; ``is_coalescing`` also brings the replies back as one message."""
        from .broadcastview import BroadcastView

        return BroadcastView(self, self._view_targets(targets), is_coalescing=is_coalescing, **kwargs)

    def load_balanced_view(self, targets: Any = None, **kwargs: Any):
        """As ipyparallel: ``targets`` (an id, ``-1`` for the last engine, a slice or a list) is
        resolved to engine ids now, so an unknown id raises IndexError here; ``"all"`` / None
        means whichever engines are registered when each task is sent."""
        from .loadbalanced import LoadBalancedView

        if targets is not None and not (isinstance(targets, str) and targets == "all"):
            targets = self._build_targets(targets)
        elif targets == "all":
            targets = None
        return LoadBalancedView(self, targets, **kwargs)

    def executor(self, targets: Any = None):
        return self.load_balanced_view(targets).executor

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
        next_look = 0.0  # when to look at the elastic pool again (about once a second)
        with Progress(total=n, desc="engines", unit="engine", enabled=interactive, widget=widget) as bar:
            while True:
                with self._cond:
                    bar.update_to(len(self._engines))
                    if len(self._engines) >= n:
                        return None
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(
                            f"{len(self._engines)} of {n} engines registered after {timeout} s; "
                            "check the engines' logs in <profile>/log/ (or the batch job output)"
                        )
                    self._cond.wait(0.2 if remaining is None else min(0.2, remaining))
                if time.monotonic() >= next_look:  # the file is read outside the lock
                    next_look = time.monotonic() + 1.0
                    reason = self._pool_stopped()
                    if reason and len(self._engines) < n:
                        raise PoolStopped(f"{len(self._engines)} of {n} engines registered, and the engine pool {reason}")

    _pool_warned = ""  # the pool stop last warned about by queue_status

    _pool_notice = ""  # why the pool stopped, as the controller last told us ("" = it did not)

    def _pool_stopped(self) -> str:
        """Why this cluster's elastic pool stopped submitting engine jobs ("" if it did not).
        The pool state file in ``<profile>/run`` (next to the ``<profile>/security`` holding
        the connection file) is current when it is here; otherwise (a laptop over SSH, a
        copied connection file) the controller's notice, which the pool manager keeps current."""
        source = Path(self._source)
        if source.parent.name == "security":
            from ..paths import ProfileDir
            from ..pool.state import stopped_reason

            local = stopped_reason(ProfileDir(source.parent.parent), self._info.cluster_id)
            if local is not None:
                return local
        return self._pool_notice

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
        """Wait for msg_ids / AsyncResults / history indices / concurrent futures (from
        ``view.executor`` or anywhere else); True if all finished in time."""
        futures: list[concurrent.futures.Future] = []
        if jobs is not None:
            items = [jobs] if isinstance(jobs, (str, int, concurrent.futures.Future)) else list(jobs)
            futures = [j for j in items if _foreign_future(j)]
            jobs = [j for j in items if not _foreign_future(j)]
        msg_ids = self._msg_ids_of(jobs)
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        with self._cond:
            if not self._cond.wait_for(lambda: not any(m in self.outstanding for m in msg_ids), timeout_left(deadline)):
                return False
        if futures:
            _, not_done = concurrent.futures.wait(futures, timeout=timeout_left(deadline))
            return not not_done
        return True

    def wait_interactive(self, jobs: Any = None, interval: float = 1.0, timeout: float = -1) -> bool:
        """Wait for ``jobs`` (default: everything outstanding) with a progress bar (a
        widget in a notebook, tqdm on a terminal, plain lines otherwise). Returns
        whether all finished; gives up silently after ``timeout`` s (as AsyncResult's)."""
        from ..progress import Progress

        msg_ids = self._msg_ids_of(jobs)
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        with Progress(total=len(msg_ids), desc="tasks", unit="task") as bar:
            while True:
                with self._lock:
                    left = sum(m in self.outstanding for m in msg_ids)
                bar.update_to(len(msg_ids) - left)
                remaining = timeout_left(deadline)
                if not left or remaining == 0:
                    return not left
                self.wait(msg_ids, interval if remaining is None else min(interval, remaining))

    def spin(self) -> None:
        """A no-op kept for ipyparallel compatibility: I/O runs in a background thread."""

    def spin_thread(self, interval: float = 1) -> None:
        """A no-op kept for ipyparallel compatibility."""

    def stop_spin_thread(self) -> None:
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
        reason = self._pool_stopped()
        if reason and reason != self._pool_warned:  # once per stop: no engines are coming
            self._pool_warned = reason
            warnings.warn(f"the engine pool {reason}", RuntimeWarning, stacklevel=2)
        if isinstance(targets, int):
            return out.get(targets, {})
        return out

    def _direct(self, msg_type: str, targets: Any, meta: dict[str, Any] | None = None, obj: Any = None,
                block: bool | None = None) -> Any:
        target_list = list(dict.fromkeys(self._build_targets(targets)))  # each engine once
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
        """Forget finished results held by this client: ``jobs`` are msg_ids, AsyncResults
        or history indices (one or a list); ``jobs='all'`` forgets every finished one."""
        everything = isinstance(jobs, str) and jobs == "all"
        with self._lock:
            if everything:
                msg_ids = [m for m in self.metadata if m not in self.outstanding]
            else:
                if not isinstance(jobs, (str, int, AsyncResult)):
                    jobs = list(jobs)
                msg_ids = self._msg_ids_of(jobs) if jobs != [] else []
                if targets:
                    wanted = set(self._build_targets(targets))
                    msg_ids += [m for m, md in self.metadata.items() if md["engine_id"] in wanted]
            for mid in msg_ids:
                if mid in self.outstanding:
                    raise RuntimeError(f"cannot purge {mid}: it has not finished")
                self.results.pop(mid, None)
                self.metadata.pop(mid, None)
                self._replies.pop(mid, None)
            if everything:
                self.history = [m for m in self.history if m in self.outstanding]

    # -- lifecycle ----------------------------------------------------------------------------------

    # -- IPython ------------------------------------------------------------------------------------

    def activate(self, targets: Any = "all", suffix: str = ""):
        """Make ``%px``, ``%%px``, ``%autopx``, ``%pxresult`` and ``%pxconfig``
        (each name + ``suffix``) run on a blocking DirectView of ``targets``."""
        view = self.direct_view(self._last_engine(targets))
        view.block = True
        view.activate(suffix)
        return view

    def dashboard(self, port: int = 0, **kwargs: Any):
        """Serve a live web dashboard of this cluster on 127.0.0.1 from a thread of this
        process (``pip install 'hpcpar[dashboard]'``): returns its URL (shown as an IFrame
        in Jupyter) with ``.stop()``. ``port=0`` picks a free port; see docs/dashboard.md."""
        from ..dashboard import start_dashboard

        return start_dashboard(self, port=port, **kwargs)

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

    def kernel_connection_file(self, engine_id: int, path: str | None = None, ip: str = "127.0.0.1",
                               allow_clear: bool = False) -> str:
        """Bind an engine's Jupyter kernel; a connection file for ``jupyter console --existing``
        here (its ports forwarded over the SSH tunnel when there is one). See hpcpar.ssh.kernel."""
        from ..ssh.kernel import kernel_connection_file

        return kernel_connection_file(self, engine_id, path=path, ip=ip, allow_clear=allow_clear)

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
        """Restore the default serialization, as in ipyparallel: hpcpar's default is
        cloudpickle, so functions, lambdas and closures keep reaching the engines."""
        self._pickler = "cloudpickle"

    def use_dill(self) -> None:
        """Serialize with dill, here and on the engines (which import it for each such task)."""
        try:
            import dill  # noqa: F401
        except ImportError as e:
            raise ImportError("use_dill needs dill: pip install dill (here and where the engines run)") from e
        self._pickler = "dill"

    # -- bridges (hpcpar/bridges/, imported on first use) ------------------------------------------

    def register_joblib_backend(self, name: str = "ipyparallel", make_default: bool = False) -> None:
        """Make joblib (and scikit-learn's ``n_jobs``) run on this cluster, load-balanced:
        ``with joblib.parallel_backend("ipyparallel"): ...``. Needs joblib."""
        self.load_balanced_view().register_joblib_backend(name, make_default)

    def become_dask(self, targets: Any = "all", port: int = 0, nanny: bool = False,
                    scheduler_args: dict[str, Any] | None = None, **worker_args: Any) -> Any:
        """A dask scheduler in the controller and a dask worker in each engine of ``targets``;
        returns a ``distributed.Client`` connected to it. Needs dask.distributed."""
        from ..bridges import dask_workers

        return dask_workers.become_dask(self, targets, port, nanny, scheduler_args, **worker_args)

    become_distributed = become_dask

    def stop_dask(self, targets: Any = "all") -> None:
        """Stop the dask workers in the engines and the scheduler in the controller."""
        from ..bridges import dask_workers

        dask_workers.stop_dask(self, targets)

    stop_distributed = stop_dask


class SessionId(str):
    """The client's session id; also ``rc.session.session`` as in ipyparallel (e.g. the
    ``client_uuid`` of its task records)."""

    @property
    def session(self) -> str:
        return str(self)


def _set_default_pickler(name: str) -> None:
    if name == "dill":
        try:
            import dill  # noqa: F401
        except ImportError as e:
            raise ImportError("use_dill needs dill: pip install dill (here and where the engines run)") from e
    Client._pickler = name


def use_cloudpickle() -> None:
    """Serialize with cloudpickle (the default) in every client of this process that has not
    chosen its own serializer; engines follow each task's choice."""
    _set_default_pickler("cloudpickle")


def use_pickle() -> None:
    """Back to the default serialization (ipyparallel's meaning): cloudpickle, so functions,
    lambdas and closures keep reaching the engines."""
    _set_default_pickler("cloudpickle")


def use_dill() -> None:
    """Serialize with dill in every client of this process that has not chosen its own."""
    _set_default_pickler("dill")


def timeout_left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (a time.monotonic() value; None: no limit), never negative."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _foreign_future(job: Any) -> bool:
    """A concurrent.futures.Future that is not one of this client's AsyncResults."""
    return isinstance(job, concurrent.futures.Future) and not isinstance(job, AsyncResult)
