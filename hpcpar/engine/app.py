"""The engine process: registration, heartbeats, and the task loop.

Two threads. The I/O thread owns the engine's one socket to the controller:
it answers heartbeats, and handles abort, signal and shutdown at once, even
while user code runs. The main thread runs requests one at a time, in order,
so signals (SIGINT) interrupt user code where the user expects.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import zmq

from .. import security, serialize, sharedmem, targetset, wire
from ..connection import ConnectionInfo
from ..mpi import segments as mpi_segments
from ..redeliver import resigned
from .executor import Executor
from .namespace import current
from .outbox import Outbox
from .refusal import Refusals
from .startup import RegistrationError, init_mpi, load_engine_connection  # noqa: F401 - the engine command's
from .status import StatusSampler
from .walltime import job_clock, retirement_reason

log = logging.getLogger("hpcpar.engine")

# Request types the I/O thread handles itself instead of queueing them.
IMMEDIATE = {"abort_request", "signal_request", "shutdown_request", "interrupt_request"}
# Never run as requests, even if one reaches the work socket (e.g. a restarted
# controller asking an engine it does not know yet to register again).
CONTROL_ONLY = IMMEDIATE | {"reregister_request", "register_request"}
LIVE_OUTPUT_INTERVAL = 0.1  # seconds between live-output messages of a running request
STATUS_EVERY = 1.0  # seconds between status samples (engine_status goes out on change, or below)
WAKE = b""  # sent on the pipe to wake the I/O thread
UNREGISTER_WAIT = 3.0  # seconds a leaving engine waits for the controller to confirm it is gone
MPI_LINGER = 1.0  # seconds an MPI rank waits, once unregistered, before it exits
CONTROLLER_SILENT = 8.0  # no word from the controller for longer (it pings every 3 s): it is gone
STATUS_IDLE_EVERY = 10.0  # an idle engine's unchanged status still goes out this often
# A busy engine's unchanged status (same task, same call) goes out this often: the controller
# extrapolates running_for; every 1 s cost ~0.1 ms controller CPU per engine per second
# (benchmarks/engine_status.py).
STATUS_BUSY_EVERY = 5.0


@dataclass
class EngineOptions:
    requested_id: int | None = None
    connect_timeout: float = 30.0  # per registration attempt cycle over all URLs
    controller_timeout: float = 60.0  # exit when the controller is silent this long
    mpi: bool = False


class Engine:
    running: Engine | None = None  # the engine of this process, once it serves (for bind_kernel)

    def __init__(self, info: ConnectionInfo, options: EngineOptions) -> None:
        self.info = info
        self.options = options
        self.signer = wire.Signer(info.key_bytes, info.transport)
        self.uuid = uuid.uuid4().hex
        self.ctx = zmq.Context()
        self.id: int | None = None
        self.heartbeat_interval = 1.0
        self.aborted: set[str] = set()
        # "Abort everything you hold" (msg_ids None) comes from a controller that
        # forgot this engine (it restarted, or declared us dead) and will have it
        # register again. The I/O thread sets abort_all; the main thread then drops
        # every request until the controller answers the work_hello that follows
        # (drop_until is that hello's msg_id): a controller only sends work after
        # that answer, so what comes before it is the old incarnation's work, and
        # what comes after it is new work that must run.
        self.abort_all = False
        self.drop_until: str | None = None
        self.need_hello = False  # set by the I/O thread after a re-registration
        self.work: zmq.Socket | None = None
        self.outbox = Outbox()  # replies until the controller has stored them (outbox.py)
        self.refusals = Refusals()  # requests that did not verify: their tasks fail (refusal.py)
        self.ns = current()
        self.executor = Executor(self.ns)
        self.kernel: Any = None  # a kernel.BoundKernel after bind_kernel(): served between tasks
        self.pipe_url = f"inproc://engine-pipe-{self.uuid}"
        self._pipe: zmq.Socket | None = None
        self._io_thread: threading.Thread | None = None
        self._pipe_lock = threading.Lock()
        self.extra_info: dict[str, Any] = {}
        self.clock = job_clock()  # batch job id and walltime end, from the job script's environment
        if self.clock.job_id is not None:
            self.extra_info["job_id"] = self.clock.job_id
        if self.clock.end is not None:
            self.extra_info["job_end"] = self.clock.end
        self.draining = False
        # Leaving (SIGTERM, shutdown): the I/O thread says so and stops heartbeating, so the
        # controller frees our id at once and no late heartbeat registers a ghost under it.
        self.leaving = threading.Event()
        self.left = threading.Event()  # the controller confirmed (unregister_reply)
        self._unregister_sent = False
        self.last_contact = time.monotonic()  # the I/O thread's last message from the controller
        self.socket: zmq.Socket | None = None
        self.url: str | None = None
        # Same-host clients exchange large buffers with us through /dev/shm (sharedmem.py).
        self.shm_key = sharedmem.host_key()
        self.shm_prefix = sharedmem.cluster_prefix(info.cluster_id, info.key_bytes)
        self.shm_limit = sharedmem.threshold()

    # -- registration -------------------------------------------------------------

    def _register_message(self) -> list[Any]:
        hdr = self.signer.header("register_request")
        return self.signer.pack(hdr, {
            "uuid": self.uuid,
            "requested_id": self.options.requested_id if self.id is None else self.id,
            "reattach": self.id is not None,  # had an id: a restored controller gives it back its work
            "info": {
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "python": sys.executable,
                "host_key": self.shm_key,
                **self.extra_info,
            },
        })

    def register(self) -> None:
        """Try each advertised URL in turn; keep the first that answers."""
        deadline = time.monotonic() + self.options.connect_timeout
        per_try = 2.0
        errors = []
        while time.monotonic() < deadline:
            for url in self.info.urls:
                sock = self.ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.IDENTITY, self.uuid.encode())
                sock.setsockopt(zmq.LINGER, 0)
                security.connect_as(sock, self.info)
                monitor = security.watch_handshake(sock)
                sock.connect(url)
                sock.send_multipart(self._register_message())
                refused = security.poll_or_refused(sock, monitor, self.info.transport == "curve",
                                                   int(per_try * 1000))
                if refused is not None:
                    sock.close()
                    raise RegistrationError(
                        f"the controller at {url} refused this engine ({refused}); the engine's connection "
                        "file is stale (the cluster was restarted?): use the current one")
                if sock.poll(0):
                    frames = sock.recv_multipart(copy=False)
                    try:
                        msg = self.signer.unpack(frames)
                    except wire.BadMessage as e:
                        sock.close()
                        raise RegistrationError(
                            f"the controller at {url} answered, but not with this cluster's key ({e}); "
                            "the engine's connection file is stale: use the current one"
                        ) from None
                    if msg.msg_type == "register_reply":
                        self.socket, self.url = sock, url
                        self._accept_registration(msg)
                        self._open_work_socket(deadline)
                        return
                errors.append(url)
                sock.close()
            per_try = min(per_try * 1.5, 10.0)
        raise RegistrationError(
            f"no controller answered at {', '.join(self.info.urls)} within "
            f"{self.options.connect_timeout:.0f} s; is the controller running and reachable "
            "from this host? (set controller.ip to an address engines can reach)"
            + ("; with transport 'curve' a stale connection file (a restarted cluster) is also refused "
               "at the handshake: use the current one" if self.info.transport == "curve" else "")
        )

    def _open_work_socket(self, deadline: float) -> None:
        """The socket requests arrive on and replies leave by, owned by the main
        thread: no thread hand-off on the path of a request."""
        work = self.ctx.socket(zmq.DEALER)
        work.setsockopt(zmq.IDENTITY, (self.uuid + ":w").encode())
        work.setsockopt(zmq.LINGER, 1000)
        work.setsockopt(zmq.SNDHWM, 0)
        work.setsockopt(zmq.RCVHWM, 0)
        security.connect_as(work, self.info)
        work.connect(self.url)
        while time.monotonic() < deadline:
            self._send_hello(work)
            if work.poll(2000):
                try:
                    if self.signer.unpack(work.recv_multipart(copy=False)).msg_type == "work_hello_reply":
                        self.work = work
                        return
                except wire.BadMessage:
                    pass
        raise RegistrationError(f"the controller at {self.url} took the registration but not the work connection")

    def _accept_registration(self, msg: wire.Message) -> None:
        self.id = int(msg.meta["id"])
        self.heartbeat_interval = float(msg.meta.get("heartbeat_interval", 1.0))
        log.info("registered as engine %d via %s", self.id, self.url)

    # -- main thread -----------------------------------------------------------------

    def run(self) -> int:
        # Before registering: a SIGTERM right after the controller gave us an id must free it.
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self.register()
        signal.signal(signal.SIGINT, self._on_sigint)
        self._pipe = self.ctx.socket(zmq.PAIR)
        self._pipe.bind(self.pipe_url)
        self.sampler = StatusSampler(self.executor, threading.get_ident(), self.extra_info.get("mpi_rank"))
        self._io_thread = threading.Thread(target=self._io_loop, name="hpcpar-engine-io", daemon=True)
        self._io_thread.start()
        work = self.work
        assert work is not None
        # A blocking receive with a time-out costs less than poll() then receive,
        # and the loop still looks at its flags every second.
        work.setsockopt(zmq.RCVTIMEO, 1000)
        Engine.running = self
        while True:
            if self.need_hello:
                self.need_hello = False
                self._send_hello(work)
            if self.kernel is not None and not self.kernel.serve_until(work, 1.0):
                continue
            try:
                frames = wire.recv_frames(work)
            except zmq.Again:
                continue
            self._serve(frames)

    def _send_hello(self, work: zmq.Socket) -> None:
        """Introduce the work socket (again, after a re-registration). The controller
        sends the abort before the register_reply that sets need_hello, so an
        abort meant for this re-registration is seen here."""
        hdr = self.signer.header("work_hello")
        if self.abort_all:
            self.abort_all = False
            self.drop_until = hdr["msg_id"]
        work.send_multipart(self.signer.pack(hdr, {"uuid": self.uuid}))

    def _dropping(self) -> bool:
        return self.abort_all or self.drop_until is not None

    def _verified(self, frames: list[Any], sock: zmq.Socket | None = None) -> wire.Message | None:
        """The message, or None (logged) when it does not verify: never run, never fatal."""
        try:
            return self.signer.unpack(frames)
        except wire.BadMessage as e:
            if sock is None:
                log.warning("dropped a message that does not verify: %s", e)
            else:
                self._refuse(sock, frames, e)
            return None

    def _refuse(self, sock: zmq.Socket, frames: list[Any], problem: Exception) -> None:
        """Not run, and not silently: the controller fails the task it names (refusal.py)."""
        notice = self.refusals.notice(frames, self.id, str(problem))
        if notice is not None:
            sock.send_multipart(notice)

    def _serve(self, frames: list[Any]) -> None:
        try:
            msg = self.signer.unpack(frames)
        except wire.BadBuffers as e:  # signed by our cluster, but its data changed on the way
            log.warning("refused a request whose data does not verify: %s", e)
            if e.message.msg_type.endswith("_request") and e.message.msg_type not in CONTROL_ONLY:
                self._run_one(e.message, damaged=str(e))
            return
        except wire.BadMessage as e:
            self._refuse(self.work, frames, e)
            return
        mt = msg.msg_type
        if mt == "work_hello_reply":
            if self.drop_until is not None and msg.header.get("parent") == self.drop_until:
                self.drop_until = None  # what follows is the new controller's work
            for held in self.outbox.pending():  # replies a dead controller may not have stored
                wire.send_frames(self.work, resigned(self.signer, held))
        elif mt == "engine_resync":  # a restored controller: which of its tasks never reached us?
            unknown = self.outbox.unknown(list(msg.meta.get("msg_ids") or []))
            wire.send_frames(self.work, self.signer.pack(self.signer.header("resync_answer"), {"msg_ids": unknown}))
        elif mt.endswith("_request") and mt not in CONTROL_ONLY:
            self._run_one(msg, self._dropping())

    def _my_msg_id(self, header: dict[str, Any]) -> str:
        """O(1): a direct request's msg_id for this engine derives from the base (targetset.py)."""
        base = header.get("msg_id", "")
        return targetset.task_id(base, self.id) if header.get("route") == "direct" else base

    def _run_one(self, msg: wire.Message, abort: bool = False, damaged: str | None = None) -> None:
        """Run a request and send its reply; ``damaged``: why its data cannot be trusted (not run)."""
        msg_id = self._my_msg_id(msg.header)
        started = wire.now()
        shm_problem = None
        if damaged is not None:
            meta = wire.failure_meta("MessageIntegrityError", f"task {msg_id} was not run: {damaged}; "
                                     "something between the client and this engine changes data (use "
                                     "[security] transport = \"curve\" on an untrusted network)")
            payload, buffers = b"", []
        elif abort or msg_id in self.aborted:
            self.aborted.discard(msg_id)
            meta = wire.failure_meta("TaskAborted", f"task {msg_id} was aborted before it started",
                                     "TaskAborted: aborted before it started")
            payload, buffers = b"", []
        elif (shm_problem := self._attach_shm(msg)) is not None:
            meta = wire.failure_meta("SharedMemoryError", shm_problem)
            payload, buffers = b"", []
        else:
            meta, payload, buffers = self.executor.run(msg, msg_id)
        shm_reply = False
        if buffers and self.shm_key is not None and msg.header.get("shm_key") == self.shm_key:
            buffers, descriptors, _ = sharedmem.export(buffers, self.shm_prefix, self.shm_limit)
            if descriptors:
                meta["shm"] = descriptors  # the client maps and removes the files
                shm_reply = True
        method = msg.msg_type.removesuffix("_request")
        meta["engine_info"] = {"engine_id": self.id, "engine_uuid": self.uuid, "method": method}
        header = self.signer.header(
            method + "_reply",
            parent=msg_id,
            client=msg.header.get("session"),
            engine_id=self.id,
            started=started,
            completed=wire.now(),
            status="unmet" if meta.get("ename") == "UnmetDependency" else meta["status"],
        )
        if shm_reply:
            header["shm"] = True
        frames = self.signer.pack(header, meta, payload, buffers)
        self.outbox.keep(msg_id, frames)
        wire.send_frames(self.work, frames)

    def _attach_shm(self, msg: wire.Message) -> str | None:
        """Put a request's shared-memory buffers in place; the problem's text if that fails."""
        if not msg.header.get("shm"):
            return None  # the client marks every request whose data is in shm (and only those)
        descriptors = _meta_or_empty(msg).get("shm")
        if descriptors is None:
            return "the request is marked as sent through shared memory but lists no shared-memory buffers"
        if self.shm_key is None or msg.header.get("shm_key") != self.shm_key:
            return ("the request's data was sent through shared memory from another host (or to an engine "
                    "with shared memory turned off); submit it again, or use Client(shared_memory=False)")
        try:
            msg.buffers = sharedmem.attach(msg.buffers, descriptors, self.shm_prefix)
        except sharedmem.SharedMemoryError as e:
            return str(e)
        return None

    def _to_io(self, frames: list[Any], block: bool = True) -> bool:
        if not self._pipe_lock.acquire(blocking=block):
            return False
        try:
            self._pipe.send_multipart(frames, copy=False)
            return True
        finally:
            self._pipe_lock.release()

    def _wake_io(self) -> None:
        if self._pipe is not None and self._pipe_lock.acquire(blocking=False):
            try:
                self._pipe.send(WAKE, zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # the I/O thread is not connected yet: it sees ``leaving`` when it starts
            finally:
                self._pipe_lock.release()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        # Interrupt user code; an idle engine ignores the signal.
        if self.executor.running:
            raise KeyboardInterrupt

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        # Tell the controller we are leaving, and wait until it has freed our id (a
        # restarted set asks for the same ids at once), or UNREGISTER_WAIT at most.
        self.leaving.set()  # first: an I/O thread that starts from now on leaves the socket to us
        self._release_mpi_segments()
        self._remove_kernel_file()
        if self._io_thread is not None and self._io_thread.is_alive():
            self._wake_io()  # the I/O thread sends the unregister_request
            # A controller silent for longer than it ever is (it pings every few seconds) is
            # gone: do not make whoever stops us wait for its answer.
            gone = time.monotonic() - self.last_contact > CONTROLLER_SILENT
            self.left.wait(0.2 if gone else UNREGISTER_WAIT)
        elif self.socket is not None:  # no I/O thread (yet): this thread owns the socket
            self._send_unregister(self.socket)
            self._await_unregister_reply(self.socket)
        if self.socket is not None and not self.left.is_set():
            log.warning("leaving; the controller did not confirm within %g s", UNREGISTER_WAIT)
        self._linger_for_peers()
        os._exit(0)

    def _release_mpi_segments(self) -> None:
        # os._exit skips MPI_Finalize, which would have removed these from /dev/shm.
        if self.options.mpi:
            sharedmem.unlink(mpi_segments.mapped_segments())

    # -- I/O thread ---------------------------------------------------------------------

    def _io_loop(self) -> None:
        if self.leaving.is_set():
            return  # SIGTERM came before we ran: the main thread unregisters (_on_sigterm)
        sock = self.socket
        assert sock is not None
        pull = self.ctx.socket(zmq.PAIR)
        pull.connect(self.pipe_url)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(pull, zmq.POLLIN)
        self.last_contact = last_contact = time.monotonic()
        next_beat = time.monotonic()
        next_status, last_status, last_sent = time.monotonic(), None, 0.0
        hb = self.signer.header  # local alias
        while True:
            now = time.monotonic()
            if self.leaving.is_set():
                self._send_unregister(sock)
                next_beat = next_status = now + 3600.0  # no heartbeat may re-register us now
            if now >= next_beat:
                sock.send_multipart(self.signer.pack(hb("heartbeat")))
                next_beat = now + self.heartbeat_interval
            if now >= next_status:
                next_status = now + STATUS_EVERY
                self._check_drain(sock)
                st = self.sampler.sample()
                key = (st["state"], st["task"], st["callee"])
                every = STATUS_IDLE_EVERY if st["task"] is None else STATUS_BUSY_EVERY
                if key != last_status or now - last_sent >= every:
                    sock.send_multipart(self.signer.pack(hb("engine_status"), st))
                    last_status, last_sent = key, now
            wait = min(next_beat, next_status) - now
            if self.executor.live is not None:
                wait = min(wait, LIVE_OUTPUT_INTERVAL)
            events = dict(poller.poll(max(1, int(wait * 1000))))
            self._send_live_output(sock)
            if pull in events:
                for frames in wire.drain(pull):
                    if len(frames) > 1 or len(frames[0]):  # one empty frame only wakes us (_on_sigterm)
                        sock.send_multipart(frames, copy=False)
            if sock in events:
                for frames in wire.drain(sock):
                    self.last_contact = last_contact = time.monotonic()
                    self._handle(sock, frames)
            if time.monotonic() - last_contact > self.options.controller_timeout:
                log.error("no word from the controller for %.0f s; exiting", self.options.controller_timeout)
                self._release_mpi_segments()
                os._exit(3)

    def _check_drain(self, sock: zmq.Socket) -> None:
        """``drain`` seconds before the job's end: tell the controller we retire (walltime.py)."""
        left = self.clock.seconds_to_drain()
        if self.draining or left is None or left > 0:
            return
        self.draining = True
        self.sampler.state_override = "draining"
        reason = retirement_reason(self.clock)
        log.info("engine %s %s", self.id, reason)
        sock.send_multipart(self.signer.pack(self.signer.header("engine_draining"),
                                             {"reason": reason, "job_end": self.clock.end}))

    def _send_live_output(self, sock: zmq.Socket) -> None:
        """Forward what the running request printed since last time (stream messages)."""
        live = self.executor.live
        if live is None:
            return
        msg_id, *captures = live
        collector = self.executor.live_outputs
        if collector is not None and collector.streamed < len(collector.outputs):
            # Rich outputs, each after the text printed before it.
            for i in range(collector.streamed, len(collector.outputs)):
                for cap, upto in zip(captures, collector.marks[i]):
                    self._send_stream(sock, msg_id, cap, upto)
                header = self.signer.header("display_data", parent=msg_id, engine_id=self.id)
                sock.send_multipart(self.signer.pack(header, {"output": collector.outputs[i], "index": i}))
                collector.streamed = i + 1
        for cap in captures:
            self._send_stream(sock, msg_id, cap, len(cap.parts))

    def _send_stream(self, sock: zmq.Socket, msg_id: str, cap: Any, end: int) -> None:
        if end > cap.streamed:
            text = "".join(cap.parts[cap.streamed:end])
            cap.streamed = end
            header = self.signer.header("stream", parent=msg_id, engine_id=self.id)
            sock.send_multipart(self.signer.pack(header, {"name": cap.name, "text": text}))

    def _handle(self, sock: zmq.Socket, frames: list[Any]) -> None:
        msg = self._verified(frames, sock)
        if msg is None:
            return
        mt = msg.msg_type
        if mt in ("heartbeat_reply", "register_reply"):
            if mt == "register_reply":
                self._accept_registration(msg)
                self.need_hello = True  # the main thread re-introduces its work socket
            return
        if mt == "unregister_reply":
            self.left.set()
            return
        if mt == "reregister_request":
            if not self.leaving.is_set():  # a leaving engine's late heartbeat: do not come back
                sock.send_multipart(self._register_message())
            return
        if mt == "stored_ack":
            self.outbox.ack(list(msg.meta.get("msg_ids") or []))
            return
        if mt in IMMEDIATE:
            getattr(self, "_" + mt)(sock, msg)

    def _reply_now(self, sock: zmq.Socket, msg: wire.Message, meta: dict[str, Any]) -> None:
        if msg.header.get("route") != "direct":
            return  # sent by the controller itself; no reply wanted
        header = self.signer.header(
            msg.msg_type.removesuffix("_request") + "_reply",
            parent=self._my_msg_id(msg.header),
            engine_id=self.id,
            started=wire.now(),
            completed=wire.now(),
            status="ok",
        )
        meta = {"status": "ok", "stdout": "", "stderr": "", **meta,
                "engine_info": {"engine_id": self.id, "engine_uuid": self.uuid}}
        payload, _ = serialize.dumps(None)
        sock.send_multipart(self.signer.pack(header, meta, payload))

    def _abort_request(self, sock: zmq.Socket, msg: wire.Message) -> None:
        msg_ids = msg.meta.get("msg_ids")
        if msg_ids is None:
            self.abort_all = True  # the main thread drops what the forgotten registration got
        else:
            self.aborted.update(msg_ids)

    def _signal_request(self, sock: zmq.Socket, msg: wire.Message) -> None:
        sig = msg.meta.get("signal", signal.SIGINT)
        if isinstance(sig, str):
            sig = getattr(signal, sig if sig.startswith("SIG") else "SIG" + sig)
        self._reply_now(sock, msg, {"signal": int(sig)})
        os.kill(os.getpid(), int(sig))

    def _interrupt_request(self, sock: zmq.Socket, msg: wire.Message) -> None:
        """SIGINT ourselves only if the named task (any, for None) is the one running now."""
        wanted = msg.meta.get("msg_ids")
        running = self.executor.running
        if running is not None and (wanted is None or running in wanted):
            os.kill(os.getpid(), signal.SIGINT)

    def _shutdown_request(self, sock: zmq.Socket, msg: wire.Message) -> None:
        self._reply_now(sock, msg, {})
        self.leaving.set()
        if msg.header.get("route") == "direct":
            self._send_unregister(sock)
            self._await_unregister_reply(sock)
            self._linger_for_peers()
        sock.close(linger=1000)
        self._release_mpi_segments()
        self._remove_kernel_file()
        os._exit(0)

    def _send_unregister(self, sock: zmq.Socket) -> None:
        if not self._unregister_sent:
            self._unregister_sent = True
            log.info("leaving: engine %s unregisters", self.id)
            sock.send_multipart(self.signer.pack(self.signer.header("unregister_request")))

    def _linger_for_peers(self) -> None:
        """An MPI rank that exits makes mpiexec kill the job's other ranks: give the peers,
        told to leave at the same moment, time to unregister too."""
        if self.options.mpi:
            time.sleep(MPI_LINGER)

    def _await_unregister_reply(self, sock: zmq.Socket) -> None:
        """On the I/O thread (shutdown_request): read until the controller confirms, briefly."""
        deadline = time.monotonic() + UNREGISTER_WAIT
        while not self.left.is_set() and (left := deadline - time.monotonic()) > 0:
            if sock.poll(int(left * 1000)):
                for frames in wire.drain(sock):
                    msg = self._verified(frames)
                    if msg is not None and msg.msg_type == "unregister_reply":
                        self.left.set()

    def _remove_kernel_file(self) -> None:
        # os._exit skips atexit: a bound kernel's connection file (bind_kernel) goes now.
        if self.kernel is not None:
            self.kernel._remove_file()


def _meta_or_empty(msg: wire.Message) -> dict[str, Any]:
    try:
        return msg.meta
    except wire.BadMessage:
        return {}  # the executor reports it if the request needs its meta
