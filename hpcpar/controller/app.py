"""The controller process: two ROUTER sockets, one event loop.

Clients reach the controller through ONE port and engines through ONE port;
channels are multiplexed by message type. Each request costs one hop here:
read the header, verify the signature, forward the frames untouched
(zero-copy) to the engine(s) or the load balancer. Task records go to the
hub's store thread (hub.py), off the path of replies.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from .. import relay, sharedmem, targetset, wire
from ..connection import ConnectionFileError, ConnectionInfo, new_key
from ..netutil import advertised_addresses, bind_address
from ..paths import ProfileDir
from .engines import EngineRecord, EngineRegistry
from .forwarding import Forwarding
from .hub import Hub
from .loadbalancer import LoadBalancer
from .scheduler import get_scheme
from .taskdb import open_backend

log = logging.getLogger("hpcpar.controller")

# Requests an engine handles on its control socket at once, even while user code runs.
CONTROL_REQUESTS = frozenset({"signal_request", "shutdown_request", "abort_request", "interrupt_request"})
DRAIN_BATCH = 256  # messages read from one socket before looking at the others
COPY_BELOW = 64 << 10  # smaller received frames are copied out of libzmq's buffers (see wire.drain)
PING_EVERY = 3.0  # seconds between heartbeat replies to one engine
BULK_BYTES = 16 << 20  # a fan-out this large extends heartbeat timeouts...
BULK_RATE = 100e6  # ...by its size over this many bytes per second
HUB_REQUESTS = ("db_query_request", "hub_history_request")


class _Stopping(BaseException):  # not caught by the handlers' "except Exception"
    """Raised by the SIGTERM/SIGINT handler to leave the loop without waiting for poll()."""


@dataclass
class ControllerConfig:
    profile_dir: ProfileDir
    cluster_id: str = ""
    ip: str = "127.0.0.1"
    port: int = 0
    engine_ip: str | None = None  # defaults to ip
    engine_port: int = 0
    location: str = field(default_factory=socket.gethostname)
    advertise: str = ""  # address or host name written first into connection files
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 6.0
    scheme: str = "leastload"
    hwm: int = 1
    max_message_size: int = -1  # bytes per frame; -1 = unlimited
    key: str | None = None
    db: str = "sqlite"  # sqlite, memory or none
    db_store_limit: int = 8 << 20  # requests/results larger than this are not stored
    restore: bool = False
    # Finished tasks remembered in memory for dependency checks; older ones are
    # looked up in the task database (bounded memory over long task farms).
    dependency_memory: int = 10_000

    @property
    def db_path(self):
        suffix = f"-{self.cluster_id}" if self.cluster_id else ""
        return self.profile_dir.path / f"tasks{suffix}.db"

    @property
    def engines_path(self):
        suffix = f"-{self.cluster_id}" if self.cluster_id else ""
        return self.profile_dir.run / f"engines{suffix}.json"


@dataclass(eq=False, slots=True)
class Task:
    client: bytes
    msg_id: str
    reply_type: str
    engine_id: int | None
    lb: bool
    header: dict[str, Any]
    frames: list[Any] | None = None  # kept while queued or in flight, for retries
    retries_left: int = 0
    deadline: float | None = None
    allowed: set[int] | None = None
    blacklist: set[int] = field(default_factory=set)
    host_key: str | None = None  # its data is in shared memory: only engines of this host key may take it
    attempts: int = 0
    watchers: list[bytes] = field(default_factory=list)  # other clients that asked for the result
    group: ReplyGroup | None = None  # replies of one broadcast, sent back as one message


@dataclass(eq=False, slots=True)
class ReplyGroup:
    """The replies of one request to several engines, collected so the client
    gets ONE message however many engines there are."""

    client: bytes
    remaining: int
    parts: list[list[Any]] = field(default_factory=list)


class Controller:
    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        if config.restore:
            self._load_previous_connection()
        self.key = config.key or new_key()
        self.signer = wire.Signer(self.key.encode("ascii"))
        self.shm_prefix = sharedmem.cluster_prefix(config.cluster_id, self.key.encode("ascii"))
        self.engines = EngineRegistry()
        self.tasks: dict[str, Task] = {}
        self.clients: set[bytes] = set()
        self.scheme = get_scheme(config.scheme)
        self.lb = LoadBalancer(self)
        self.running = False
        self._auth_warned: dict[bytes, float] = {}
        self._engines_dirty = False
        self._resubmits: dict[str, dict[str, Any]] = {}
        self._ping: list[Any] = []
        self._expect_until = time.monotonic() + 60.0  # how long restored engines may take to re-attach
        self._bulk_until = 0.0  # heartbeat timeouts are extended until then (large fan-outs)
        self._ping_made = -1e9
        self.ctx = zmq.Context()
        self.client_socket = self._router()
        self.engine_socket = self._router()
        self.forwarding = Forwarding(self.engine_socket)  # routes to engines behind forwarders
        self.hub_pipe = self.ctx.socket(zmq.PAIR)
        self.hub_pipe.bind(f"inproc://hpcpar-hub-{id(self)}")
        config.profile_dir.create()
        if not config.restore and config.db == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                config.db_path.with_name(config.db_path.name + suffix).unlink(missing_ok=True)
        backend = open_backend(config.db, config.db_path)
        self.hub = Hub(backend, wire.Signer(self.key.encode("ascii")), self.ctx,
                       f"inproc://hpcpar-hub-{id(self)}", config.db_store_limit)
        self.client_urls: list[str] = []
        self.engine_urls: list[str] = []
        if config.restore:
            self._restore_state(backend)

    # -- set-up ---------------------------------------------------------------

    def _router(self) -> zmq.Socket:
        s = self.ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.ROUTER_MANDATORY, 1)  # tell us when a peer is gone
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
        if self.config.max_message_size > 0:
            s.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_size)
        return s

    def _bind(self, sock: zmq.Socket, ip: str, port: int) -> list[str]:
        sock.bind(f"tcp://{bind_address(ip)}:{port}")
        endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        real_port = int(endpoint.rsplit(":", 1)[1])
        addresses = advertised_addresses(ip)
        if self.config.advertise:
            # The name or address the site says engines and clients should use, first.
            addresses = [self.config.advertise, *(a for a in addresses if a != self.config.advertise)]
        return [f"tcp://{addr}:{real_port}" for addr in addresses]

    def bind(self) -> None:
        c = self.config
        self.client_urls = self._bind(self.client_socket, c.ip, c.port)
        self.engine_urls = self._bind(self.engine_socket, c.engine_ip or c.ip, c.engine_port)

    def write_connection_files(self) -> None:
        c = self.config
        common = {
            "key": self.key,
            "cluster_id": c.cluster_id,
            "profile": c.profile_dir.name,
            "location": c.location,
            "controller_pid": os.getpid(),
        }
        ConnectionInfo(urls=self.client_urls, role="client", **common).write(c.profile_dir.client_file(c.cluster_id))
        ConnectionInfo(urls=self.engine_urls, role="engine", **common).write(c.profile_dir.engine_file(c.cluster_id))

    def remove_connection_files(self) -> None:
        c = self.config
        for path in (c.profile_dir.client_file(c.cluster_id), c.profile_dir.engine_file(c.cluster_id)):
            try:
                if ConnectionInfo.load(path).controller_pid == os.getpid():
                    path.unlink()
            except (OSError, ValueError):
                pass

    # -- restart --------------------------------------------------------------------

    def _load_previous_connection(self) -> None:
        """--restore: same key and ports, so surviving engines and clients reconnect by themselves."""
        c = self.config
        try:
            client = ConnectionInfo.load(c.profile_dir.client_file(c.cluster_id))
            engine = ConnectionInfo.load(c.profile_dir.engine_file(c.cluster_id))
        except ConnectionFileError as e:
            raise SystemExit(f"cannot restore: {e}") from None
        c.key = client.key
        c.port = c.port or int(client.urls[0].rsplit(":", 1)[1])
        c.engine_port = c.engine_port or int(engine.urls[0].rsplit(":", 1)[1])

    def _restore_state(self, backend: Any) -> None:
        try:
            known = json.loads(self.config.engines_path.read_text())
        except (OSError, ValueError):
            known = {}
        self.engines.expect({uuid: int(eid) for uuid, eid in known.get("engines", {}).items()},
                            int(known.get("next_id", 0)))
        # Tasks in flight when the old controller died will never be answered by
        # the engines. Load-balanced ones whose retries allow run again (same
        # msg_id, so the waiting client gets the result); the others fail, and
        # the failure is stored so a client that asks (or resyncs) gets it.
        lost = backend.find({"completed": {"$exists": False}},
                            ["msg_id", "session", "msg_type", "engine_id", "request"])
        retried = 0
        for rec in lost:
            if self._retry_after_restart(rec):
                retried += 1
                continue
            task = Task(rec["session"].encode() if rec.get("session") else b"", rec["msg_id"],
                        _reply_type(rec.get("msg_type") or "apply_request"), rec.get("engine_id"), False, {})
            self.fail_task(task, "EngineError", "the controller restarted while this task was in flight; "
                           "resubmit it (rc.resubmit) if it should run", notify=False)
        if lost:
            log.warning("restored: of %d tasks in flight at the crash, %d run again (retries), %d failed",
                        len(lost), retried, len(lost) - retried)

    def _retry_after_restart(self, rec: dict[str, Any]) -> bool:
        try:
            msg = self.signer.unpack(rec.get("request") or [])
        except wire.BadMessage:
            return False
        retries = int(msg.header.get("retries") or 0)
        if msg.header.get("route") != "lb" or retries <= 0 or msg.msg_id != rec["msg_id"]:
            return False
        self.route_lb(msg.header.get("session", "").encode(), msg)
        task = self.tasks.get(msg.msg_id)
        if task is not None:
            task.retries_left = retries - 1  # the lost attempt counts
        return True

    def _save_engines(self) -> None:
        data = {"engines": {e.uuid: e.id for e in self.engines.by_id.values()}, "next_id": self.engines.next_id}
        tmp = self.config.engines_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.config.engines_path)
        self._engines_dirty = False

    # -- main loop --------------------------------------------------------------

    def serve(self) -> None:
        self.running = True
        poller = zmq.Poller()
        poller.register(self.client_socket, zmq.POLLIN)
        poller.register(self.engine_socket, zmq.POLLIN)
        poller.register(self.hub_pipe, zmq.POLLIN)
        check_every = max(0.05, min(0.5, self.config.heartbeat_interval / 2))
        next_check = time.monotonic() + check_every
        log.info("controller ready: clients %s, engines %s", self.client_urls, self.engine_urls)
        try:
            self._loop(poller, check_every, next_check)
        except _Stopping:
            pass
        self._shutdown_engines()

    def _loop(self, poller: zmq.Poller, check_every: float, next_check: float) -> None:
        while self.running:
            timeout = max(0.0, next_check - time.monotonic())
            events = dict(poller.poll(int(timeout * 1000) + 1))
            if self.engine_socket in events:
                self._drain(self.engine_socket, self.handle_engine)
            if self.client_socket in events:
                self._drain(self.client_socket, self.handle_client)
            if self.hub_pipe in events:
                self._drain(self.hub_pipe, self.handle_hub)
            now = time.monotonic()
            if now >= next_check:
                if self.engines.expected and now > self._expect_until:
                    self.engines.expected.clear()  # engines that did not come back after a restart
                    self.lb.schedule()
                self.check_heartbeats(now)
                self.forwarding.expire(now, 3 * self.config.heartbeat_timeout + 10.0)
                self.lb.check_timeouts(now)
                if self._engines_dirty:
                    self._save_engines()
                next_check = now + check_every

    def _drain(self, sock: zmq.Socket, handler) -> None:
        for frames in wire.drain(sock, DRAIN_BATCH, COPY_BELOW):
            try:
                handler(frames)
            except Exception:
                # Nothing a peer sends may take the controller down.
                log.exception("error handling a message; dropped")

    def stop(self, *_: Any) -> None:
        self.running = False

    def stop_now(self, *_: Any) -> None:
        """Signal handler: leave the loop at once, even from inside poll()."""
        if self.running:
            self.running = False
            raise _Stopping

    # -- sending ----------------------------------------------------------------

    def _send(self, sock: zmq.Socket, ident: bytes, frames: list[Any]) -> bool:
        try:
            wire.send_frames(sock, [ident, *frames])
            return True
        except zmq.ZMQError as e:
            if e.errno == zmq.EHOSTUNREACH:
                return False
            raise

    def to_client(self, ident: bytes, frames: list[Any]) -> None:
        if not ident:
            return
        if not self._send(self.client_socket, ident, frames):
            log.info("client %s is not connected; it can fetch this later (get_result)", ident[:8])
            self.clients.discard(ident)

    @staticmethod
    def _address(rec: EngineRecord, control: bool) -> bytes:
        """Requests go to the engine's work socket; ``control`` messages to its control socket."""
        return rec.ident if control or rec.work_ident is None else rec.work_ident

    def to_engine(self, rec: EngineRecord, frames: list[Any], control: bool = False) -> bool:
        return self.forwarding.send(self._address(rec, control), frames)

    def reply_client(self, ident: bytes, msg_type: str, parent: str, meta: dict[str, Any]) -> None:
        header = self.signer.header(msg_type, parent=parent)
        self.to_client(ident, self.signer.pack(header, meta))

    def notify_clients(self, msg_type: str, meta: dict[str, Any]) -> None:
        frames = self.signer.pack(self.signer.header(msg_type), meta)
        for ident in list(self.clients):
            self.to_client(ident, frames)

    # -- clients ----------------------------------------------------------------

    def _unpack(self, frames: list[Any], origin: str) -> tuple[bytes, wire.Message] | None:
        ident = bytes(frames[0])
        try:
            return ident, self.signer.unpack(frames[1:])
        except wire.BadMessage as e:
            log.warning("dropped a message from a %s (%s)", origin, e)
            self._tell_unauthenticated(origin, ident, str(e))
            return None

    def _tell_unauthenticated(self, origin: str, ident: bytes, reason: str) -> None:
        """Answer a bad message once per peer per second, so a client with a
        stale key gets a clear error instead of a time-out. Unsigned: the
        peer cannot verify us either."""
        now = time.monotonic()
        if now - self._auth_warned.get(ident, 0.0) < 1.0:
            return
        if len(self._auth_warned) > 10_000:
            self._auth_warned.clear()
        self._auth_warned[ident] = now
        sock = self.client_socket if origin == "client" else self.engine_socket
        try:
            sock.send_multipart([ident, b"hpcpar-rejected", reason.encode()], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def handle_client(self, frames: list[Any]) -> None:
        unpacked = self._unpack(frames, "client")
        if unpacked is None:
            return
        ident, msg = unpacked
        # Replies go to the client's receiving socket, named by its session (the
        # request may have left from the client's sending socket).
        session = msg.header.get("session")
        if isinstance(session, str) and session:
            ident = session.encode()
        self.clients.add(ident)
        route = msg.header.get("route", "controller")
        if route == "direct":
            self.route_direct(ident, msg)
        elif route == "lb":
            self.route_lb(ident, msg)
        elif msg.msg_type in HUB_REQUESTS:
            self.hub.request(ident, msg)
        else:
            handler = getattr(self, "on_" + msg.msg_type, None)
            if handler is None:
                self.reply_client(ident, "error_reply", msg.msg_id, {
                    "status": "error", "ename": "ValueError",
                    "evalue": f"unknown controller request {msg.msg_type!r}"})
            else:
                handler(ident, msg)

    def route_direct(self, ident: bytes, msg: wire.Message) -> None:
        h = msg.header
        try:
            targets = targetset.expand(h.get("targets"))
        except ValueError as e:
            self.reply_client(ident, "error_reply", msg.msg_id, {
                "status": "error", "ename": "ValueError", "evalue": f"malformed direct request: {e}"})
            return
        msg_ids = [targetset.task_id(msg.msg_id, eid) for eid in targets]
        reply_type = _reply_type(msg.msg_type)
        self.hub.submitted_many(list(zip(msg_ids, targets)), h, msg.frames)
        self._allow_for_bulk(msg.frames, len(targets))
        group = ReplyGroup(ident, len(targets)) if h.get("coalesce") and len(targets) > 1 else None
        control = msg.msg_type in CONTROL_REQUESTS
        sends: list[tuple[bytes, str]] = []
        by_ident: dict[bytes, EngineRecord] = {}
        for eid, mid in zip(targets, msg_ids):
            task = Task(ident, mid, reply_type, eid, False, h)
            task.group = group
            rec = self.engines.by_id.get(eid)
            if rec is None or not rec.ready:
                self.fail_task(task, "EngineError", f"engine {eid} is not registered")
                continue
            self.tasks[mid] = task
            rec.outstanding[mid] = False
            dest = self._address(rec, control)
            sends.append((dest, mid))
            by_ident[dest] = rec
        # One copy per directly connected engine, one per top-level forwarder for the engines behind it.
        for dest in self.forwarding.broadcast(sends, msg.frames, batch=group is not None):
            self.engine_died(by_ident[dest], "its connection is gone")

    def route_lb(self, ident: bytes, msg: wire.Message) -> None:
        task = Task(ident, msg.msg_id, _reply_type(msg.msg_type), None, True, msg.header, msg.frames)
        self.tasks[msg.msg_id] = task
        self.hub.submitted(msg.msg_id, msg.header, msg.frames, None)
        self.lb.submit(task)

    def dispatch_lb(self, task: Task, rec: EngineRecord) -> None:
        """Send a load-balanced task to the engine the scheme picked."""
        rec.lb_in_flight += 1
        rec.last_assigned = time.monotonic()
        rec.outstanding[task.msg_id] = True
        task.engine_id = rec.id
        task.attempts += 1
        self.hub.assigned(task.msg_id, rec.id, task.attempts)
        self.forwarding.request_copies += 1
        if not self.to_engine(rec, task.frames or []):
            self.engine_died(rec, "its connection is gone")

    def fail_task(self, task: Task, ename: str, evalue: str, notify: bool = True) -> None:
        """Answer a task on the engine's behalf: nothing is lost silently."""
        self.tasks.pop(task.msg_id, None)
        header = self.signer.header(
            task.reply_type,
            parent=task.msg_id,
            engine_id=task.engine_id,
            status="error",
            started=None,
            completed=wire.now(),
        )
        meta = wire.failure_meta(ename, evalue)
        meta["engine_info"] = {"engine_id": task.engine_id, "method": task.header.get("msg_type")}
        frames = self.signer.pack(header, meta)
        self.hub.finished(task.msg_id, header, frames)
        self.lb.task_finished(task.msg_id, False, task.engine_id)
        if notify:
            self.deliver(task, frames)

    def deliver(self, task: Task, frames: list[Any]) -> None:
        """A task's reply to its client (alone, or with its broadcast group) and watchers."""
        for ident in task.watchers:
            self.to_client(ident, frames)
        group = task.group
        if group is None:
            self.to_client(task.client, frames)
            return
        group.parts.append(frames)
        group.remaining -= 1
        if group.remaining == 0:
            header = self.signer.header("coalesced_reply", counts=[len(p) for p in group.parts])
            self.to_client(group.client, self.signer.pack(header, {}, b"", [f for p in group.parts for f in p]))

    # controller requests --------------------------------------------------------

    def on_connect_request(self, ident: bytes, msg: wire.Message) -> None:
        self.reply_client(ident, "connect_reply", msg.msg_id, {
            "engines": [e.describe() for e in self.engines.ready()],
            "cluster_id": self.config.cluster_id,
            "heartbeat_timeout": self.config.heartbeat_timeout,
            "scheme": self.config.scheme,
            "db": self.config.db,
        })

    def on_disconnect_request(self, ident: bytes, msg: wire.Message) -> None:
        self.clients.discard(ident)

    def on_engine_info_request(self, ident: bytes, msg: wire.Message) -> None:
        """Lets an engine that was given the client file find the engine port."""
        self.reply_client(ident, "engine_info_reply", msg.msg_id, {"urls": self.engine_urls})

    def on_queue_status_request(self, ident: bytes, msg: wire.Message) -> None:
        targets = msg.meta.get("targets") or self.engines.ids()
        verbose = bool(msg.meta.get("verbose"))
        status: dict[str, Any] = {}
        for eid in targets:
            rec = self.engines.by_id.get(eid)
            if rec is None:
                continue
            direct = [m for m, lb in rec.outstanding.items() if not lb]
            lb = [m for m, is_lb in rec.outstanding.items() if is_lb]
            status[str(eid)] = {
                "queue": direct if verbose else len(direct),
                "tasks": lb if verbose else len(lb),
                "completed": rec.completed,
            }
        queued = self.lb.unassigned()
        status["unassigned"] = queued if verbose else len(queued)
        self.reply_client(ident, "queue_status_reply", msg.msg_id, {"status": status})

    def on_abort_request(self, ident: bytes, msg: wire.Message) -> None:
        """Drop queued load-balanced tasks here; ask engines to drop theirs (and
        with ``interrupt``, to interrupt the ones running)."""
        msg_ids = msg.meta.get("msg_ids")
        wanted = set(msg_ids) if msg_ids is not None else None
        aborted = self.lb.abort(wanted, ident)
        targets = msg.meta.get("targets")
        engine_ids = targets if targets is not None else self.engines.ids()
        for eid in engine_ids:
            rec = self.engines.by_id.get(eid)
            if rec is not None:
                # "everything queued" becomes the explicit list of what this engine holds
                ids = msg_ids if msg_ids is not None else [m for m in rec.outstanding if self.tasks.get(m) is not None
                                                           and self.tasks[m].client == ident]
                frames = self.signer.pack(self.signer.header("abort_request"), {"msg_ids": ids})
                self.to_engine(rec, frames, control=True)
        interrupted = []
        if msg.meta.get("interrupt") and wanted:
            for mid in wanted:
                task = self.tasks.get(mid)
                rec = self.engines.by_id.get(task.engine_id) if task and task.engine_id is not None else None
                if rec is not None:
                    self.to_engine(rec, self.signer.pack(self.signer.header("interrupt_request"), {"msg_ids": [mid]}),
                                   control=True)
                    interrupted.append(mid)
        self.reply_client(ident, "abort_reply", msg.msg_id, {"aborted_queued": aborted, "interrupted": interrupted})

    def on_hub_shutdown_request(self, ident: bytes, msg: wire.Message) -> None:
        self.reply_client(ident, "hub_shutdown_reply", msg.msg_id, {"status": "ok"})
        self.running = False

    def on_engines_request(self, ident: bytes, msg: wire.Message) -> None:
        now = time.monotonic()
        engines = []
        for e in self.engines.ready():
            d = e.describe()
            d.update(
                queued=sum(1 for lb in e.outstanding.values() if not lb),
                running_lb=e.lb_in_flight,
                completed=e.completed,
                last_heartbeat_age=round(now - e.last_seen, 3),
            )
            engines.append(d)
        self.reply_client(ident, "engines_reply", msg.msg_id, {
            "engines": engines,
            "tasks": {**self.hub.totals(), "pending": len(self.tasks), "unassigned": len(self.lb.unassigned())},
            "forwarding": self.forwarding.describe([e.ident for e in self.engines.by_id.values()]),
        })

    def _pending_of(self, msg_ids: list[str], ident: bytes | None = None) -> list[str]:
        pending = [m for m in msg_ids if m in self.tasks]
        if ident is not None:
            for m in pending:
                task = self.tasks[m]
                if ident != task.client and ident not in task.watchers:
                    task.watchers.append(ident)
        return pending

    def on_result_request(self, ident: bytes, msg: wire.Message) -> None:
        """Results of any client's tasks: finished ones from the store, pending
        ones when they finish (the asking client is added as a watcher)."""
        msg_ids = list(msg.meta.get("msg_ids") or [])
        self.hub.request(ident, msg, {"pending": self._pending_of(msg_ids, ident)})

    def on_resync_request(self, ident: bytes, msg: wire.Message) -> None:
        """A client reconnected: resend what it may have missed."""
        self.on_result_request(ident, msg)

    def on_result_status_request(self, ident: bytes, msg: wire.Message) -> None:
        self.hub.request(ident, msg, {"pending": self._pending_of(list(msg.meta.get("msg_ids") or []))})

    def on_purge_request(self, ident: bytes, msg: wire.Message) -> None:
        self.hub.request(ident, msg, {"pending": list(self.tasks)})

    def on_resubmit_request(self, ident: bytes, msg: wire.Message) -> None:
        self._resubmits[msg.msg_id] = {"mapping": {}, "client": ident}
        self.hub.request(ident, msg)

    # -- the hub's answers ------------------------------------------------------------

    def handle_hub(self, frames: list[Any]) -> None:
        kind = bytes(frames[0])
        ident = bytes(frames[1])
        if kind == b"client":
            self.to_client(ident, frames[2:])
        elif kind == b"looked-up":
            self.lb.looked_up(json.loads(bytes(frames[2])))
        elif kind == b"resubmit":
            self._resubmit_one(ident, bytes(frames[2]).decode(), json.loads(bytes(frames[3])), frames[4:])
        elif kind == b"resubmit-done":
            parent = bytes(frames[2]).decode()
            state = self._resubmits.pop(parent, {"mapping": {}})
            missing = json.loads(bytes(frames[3])).get("missing", [])
            self.reply_client(ident, "resubmit_reply", parent, {"mapping": state["mapping"], "missing": missing})

    def _resubmit_one(self, ident: bytes, parent: str, info: dict[str, Any], stored: list[Any]) -> None:
        """Run a stored request again under a new msg_id, for the asking client."""
        try:
            old = self.signer.unpack(stored)
        except wire.BadMessage:
            return
        header = dict(old.header)
        new_id = wire.new_id()
        header.update(msg_id=new_id, session=ident.decode(errors="replace"), date=wire.now(), resubmitted=info["old"])
        if header.get("route") == "direct":
            header["targets"] = [info["engine_id"]]
        # The original client's host key must not make the engine answer the asking client
        # (maybe on another host) through shared memory.
        header.pop("shm_key", None)
        frames = self.signer.pack(header, old.meta, stored[3], stored[4:])
        msg = self.signer.unpack(frames)
        state = self._resubmits.get(parent)
        if state is not None:
            direct = header.get("route") == "direct"
            state["mapping"][info["old"]] = targetset.task_id(new_id, info["engine_id"]) if direct else new_id
        if header.get("route") == "direct":
            self.route_direct(ident, msg)
        else:
            self.route_lb(ident, msg)

    # -- engines ----------------------------------------------------------------

    def handle_engine(self, frames: list[Any]) -> None:
        # ``path``: the forwarders the message came through (empty for a direct engine);
        # a forwarder's batch carries several engines' replies.
        path, messages = relay.unwrap(frames)
        if len(messages) > 1:
            self.forwarding.batched_replies += len(messages)
        for ident, signed in messages:
            try:
                self._engine_message(path, ident, signed)
            except Exception:
                log.exception("error handling a message from an engine; dropped")

    def _engine_message(self, path: tuple[bytes, ...], ident: bytes, signed: list[Any]) -> None:
        try:
            msg = self.signer.unpack(signed)
        except wire.BadMessage as e:
            log.warning("dropped a message from an engine (%s)", e)
            if not path:
                self._tell_unauthenticated("engine", ident, str(e))
            return
        mt = msg.msg_type
        if mt == "register_request":
            self.forwarding.remember(ident, path)
            self.on_register(ident, msg)
            return
        if mt == "work_hello":
            self.forwarding.remember(ident, path)
            self.on_work_hello(ident, msg)
            return
        if mt == "forwarder_hello":
            self.forwarding.hello(path, ident, msg.meta)
            self.forwarding.send(relay.SELF, self.signer.pack(self.signer.header("forwarder_hello_reply")),
                                 (*path, ident))
            return
        if mt == "heartbeat_batch":
            self.on_heartbeat_batch((*path, ident), msg)
            return
        rec = self.engines.lookup(ident)
        if rec is None:
            # An engine we do not know (we restarted, or declared it dead):
            # ask it to register again rather than trusting its old id.
            self.forwarding.send(ident, self.signer.pack(self.signer.header("reregister_request")), path)
            return
        now = rec.last_seen = time.monotonic()
        if mt == "heartbeat":
            # Engines only need to hear from us now and then (their controller_timeout is
            # a minute by default): answer every few seconds, not every beat, with frames
            # signed once a second for everyone.
            if now - rec.last_ping_sent >= PING_EVERY:
                rec.last_ping_sent = now
                self.forwarding.send(ident, self._ping_frames(now))
        elif mt.endswith("_reply"):
            self.on_engine_reply(rec, msg)
        elif mt in ("stream", "display_data"):
            task = self.tasks.get(msg.header.get("parent"))
            if task is not None:
                for client in [task.client, *task.watchers]:
                    self.to_client(client, msg.frames)
        elif mt == "unregister_request":
            self.unregister(rec, "shut down")

    def on_heartbeat_batch(self, below: tuple[bytes, ...], msg: wire.Message) -> None:
        """A forwarder verified these engines' heartbeats (and answers them itself)."""
        now = time.monotonic()
        self.forwarding.seen(below)
        for name in msg.meta.get("engines") or []:
            ident = str(name).encode("latin-1")
            rec = self.engines.lookup(ident)
            if rec is None:  # as for a direct engine we do not know: ask it to register again
                self.forwarding.send(ident, self.signer.pack(self.signer.header("reregister_request")), below)
            else:
                rec.last_seen = now

    def _ping_frames(self, now: float) -> list[Any]:
        if now - self._ping_made > 1.0:
            self._ping = self.signer.pack(self.signer.header("heartbeat_reply"))
            self._ping_made = now
        return self._ping

    def on_register(self, ident: bytes, msg: wire.Message) -> None:
        m = msg.meta
        known = ident in self.engines.by_ident
        returning = not known and str(m.get("uuid", "")) in self.engines.expected
        rec = self.engines.register(ident, str(m.get("uuid", "")), m.get("requested_id"), dict(m.get("info") or {}))
        if returning:
            # Whatever it holds was reported failed (or re-queued) at the restart: drop it,
            # stop it. Sent before the register_reply, so the engine drops exactly what
            # reaches it before we answer its work_hello, never the work we send after.
            for mt in ("abort_request", "interrupt_request"):
                self.forwarding.send(ident, self.signer.pack(self.signer.header(mt), {"msg_ids": None}))
        reply = self.signer.header("register_reply", parent=msg.msg_id)
        self.forwarding.send(ident, self.signer.pack(reply, {
            "id": rec.id,
            "heartbeat_interval": self.config.heartbeat_interval,
            "heartbeat_timeout": self.config.heartbeat_timeout,
        }))
        if not known:
            self._engines_dirty = True

    def on_work_hello(self, ident: bytes, msg: wire.Message) -> None:
        """The engine's second socket, for requests and replies: now it may get work."""
        uuid = str(msg.meta.get("uuid", ""))
        rec = self.engines.by_ident.get(uuid.encode())  # engines name their control socket by uuid
        if rec is None or rec.uuid != uuid:
            rec = next((e for e in self.engines.by_id.values() if e.uuid == uuid), None)
        if rec is None:
            self.forwarding.send(ident, self.signer.pack(self.signer.header("reregister_request")))
            self.forwarding.forget(ident)
            return
        self.engines.set_work(rec, ident)
        # Its parent tells the engine which hello this answers: work before it is stale.
        self.forwarding.send(ident, self.signer.pack(self.signer.header("work_hello_reply", parent=msg.msg_id)))
        if not rec.ready:
            rec.ready = True
            log.info("engine %d registered (%s pid %s)", rec.id, rec.info.get("hostname"), rec.info.get("pid"))
            self.notify_clients("engine_registered", {"engine": rec.describe()})
            self.lb.schedule()

    def on_engine_reply(self, rec: EngineRecord, msg: wire.Message) -> None:
        parent = msg.header.get("parent")
        task = self.tasks.get(parent)
        if task is None:
            # Already failed on the engine's behalf (e.g. declared dead then back): nobody
            # will read this reply, so its shared-memory files go now.
            if msg.header.get("shm"):
                sharedmem.unlink(sharedmem.names_in(msg.meta, self.shm_prefix))
            return
        lb = rec.outstanding.pop(parent, False)
        rec.completed += 1
        status = msg.header.get("status", "ok")
        if lb:
            rec.lb_in_flight -= 1
            if status == "unmet":
                task.blacklist.add(rec.id)
                self.lb.retry(task, rec, avoid_engine=False)
                self.lb.schedule()
                return
            if status == "error" and task.retries_left > 0:
                task.retries_left -= 1
                self.lb.retry(task, rec, avoid_engine=True)
                self.lb.schedule()
                return
        del self.tasks[parent]
        task.frames = None
        self.deliver(task, msg.frames)
        if msg.header.get("shm") and task.client not in self.clients:
            # Its client closed (or is gone): nobody will map and remove the reply's files.
            sharedmem.unlink(sharedmem.names_in(msg.meta, self.shm_prefix))
        self.hub.finished(parent, msg.header, msg.frames)
        self.lb.task_finished(parent, status == "ok", rec.id)
        if lb:
            self.lb.schedule()

    def _allow_for_bulk(self, frames: list[Any], copies: int) -> None:
        """A large fan-out (say 10 MB to 256 engines) keeps the network, this
        process's I/O and the engines busy for seconds, and heartbeats queue
        behind it: give engines that much more time before calling them dead."""
        nbytes = sum(len(f) for f in frames[3:]) * copies
        if nbytes >= BULK_BYTES:
            until = time.monotonic() + nbytes / BULK_RATE
            self._bulk_until = max(self._bulk_until, until)

    def check_heartbeats(self, now: float) -> None:
        limit = self.config.heartbeat_timeout + max(0.0, self._bulk_until - now)
        for rec in list(self.engines.by_id.values()):
            if now - rec.last_seen > limit:
                self.engine_died(rec, f"no heartbeat for {now - rec.last_seen:.1f} s")

    def engine_died(self, rec: EngineRecord, why: str) -> None:
        log.warning("engine %d (%s pid %s) is lost: %s", rec.id, rec.info.get("hostname"), rec.info.get("pid"), why)
        path = self.forwarding.via.get(rec.ident, ())
        self.unregister(rec, f"died or became unreachable ({why})")
        # If it is only slow (stopped, swapping, starved), it must drop the work we
        # reported as failed; its next heartbeat then makes it register again.
        for mt in ("abort_request", "interrupt_request"):
            try:
                self.forwarding.send(rec.ident, self.signer.pack(self.signer.header(mt), {"msg_ids": None}), path)
            except zmq.ZMQError:
                pass

    def unregister(self, rec: EngineRecord, why: str) -> None:
        if self.engines.by_id.get(rec.id) is not rec:
            return
        was_ready = rec.ready
        self.engines.remove(rec)
        self.forwarding.forget(rec.ident, rec.work_ident)
        self._engines_dirty = True
        name = f"engine {rec.id}"
        if rec.info.get("mpi_rank") is not None:
            name += f" (MPI rank {rec.info['mpi_rank']} of {rec.info.get('mpi_size')})"
        for mid, is_lb in list(rec.outstanding.items()):
            task = self.tasks.get(mid)
            if task is None:
                continue
            if is_lb and task.retries_left > 0:
                task.retries_left -= 1
                self.lb.retry(task, None, avoid_engine=False)
            else:
                self.fail_task(task, "EngineError", f"{name} {why} while holding task {mid}")
        rec.outstanding.clear()
        rec.lb_in_flight = 0
        if was_ready:
            self.notify_clients("engine_unregistered", {"engine": rec.describe(), "reason": why})
        self.lb.schedule()

    def _shutdown_engines(self) -> None:
        frames = self.signer.pack(self.signer.header("shutdown_request"), {"reason": "controller stopping"})
        for rec in list(self.engines.by_id.values()):
            try:
                self.forwarding.send(rec.ident, frames)
            except zmq.ZMQError:
                pass
        self.forwarding.to_forwarders(frames)  # after their engines' copies, on the same pipes
        for task in list(self.tasks.values()):
            self.fail_task(task, "EngineError", "the controller shut down before the task finished")
        self.notify_clients("controller_stopping", {})
        time.sleep(0.05)  # let the sockets flush what was just queued

    def close(self) -> None:
        self.hub.close()
        self.remove_connection_files()
        sharedmem.remove_leftovers(self.shm_prefix)  # files of clients or engines that died
        self.client_socket.close(linger=200)
        self.engine_socket.close(linger=200)
        self.hub_pipe.close(linger=0)
        self.ctx.term()


def _reply_type(msg_type: str) -> str:
    return msg_type[: -len("_request")] + "_reply" if msg_type.endswith("_request") else msg_type + "_reply"


def run_controller(config: ControllerConfig) -> int:
    ctl = Controller(config)
    ctl.bind()
    ctl.write_connection_files()
    signal.signal(signal.SIGTERM, ctl.stop_now)
    signal.signal(signal.SIGINT, ctl.stop_now)
    try:
        ctl.serve()
    finally:
        ctl.close()
    return 0
