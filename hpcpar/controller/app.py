"""The controller process: two ROUTER sockets, one event loop.

Clients reach the controller through ONE port and engines through ONE port;
channels are multiplexed by message type. Each request costs one hop here:
read the header, verify the signature, forward the frames untouched
(zero-copy) to the engine(s) or the load-balancing queue.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import zmq

from .. import wire
from ..connection import ConnectionInfo, new_key
from ..netutil import advertised_addresses, bind_address
from ..paths import ProfileDir
from .engines import EngineRecord, EngineRegistry
from .hub import Hub
from .scheduler import get_scheme

log = logging.getLogger("hpcpar.controller")

DRAIN_BATCH = 256  # messages read from one socket before looking at the other


@dataclass
class ControllerConfig:
    profile_dir: ProfileDir
    cluster_id: str = ""
    ip: str = "127.0.0.1"
    port: int = 0
    engine_ip: str | None = None  # defaults to ip
    engine_port: int = 0
    location: str = field(default_factory=socket.gethostname)
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 6.0
    scheme: str = "leastload"
    hwm: int = 1
    max_message_size: int = -1  # bytes per frame; -1 = unlimited
    key: str | None = None


@dataclass
class Task:
    client: bytes
    msg_id: str
    reply_type: str
    engine_id: int | None
    lb: bool
    header: dict[str, Any]
    frames: list[Any] | None = None  # kept only while queued for load balancing


class Controller:
    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.key = config.key or new_key()
        self.signer = wire.Signer(self.key.encode("ascii"))
        self.engines = EngineRegistry()
        self.hub = Hub()
        self.tasks: dict[str, Task] = {}
        self.lb_queue: deque[Task] = deque()
        self.clients: set[bytes] = set()
        self.scheme = get_scheme(config.scheme)
        self.running = False
        self._auth_warned: dict[bytes, float] = {}
        self.ctx = zmq.Context()
        self.client_socket = self._router()
        self.engine_socket = self._router()
        self.client_urls: list[str] = []
        self.engine_urls: list[str] = []

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
        return [f"tcp://{addr}:{real_port}" for addr in advertised_addresses(ip)]

    def bind(self) -> None:
        c = self.config
        self.client_urls = self._bind(self.client_socket, c.ip, c.port)
        self.engine_urls = self._bind(self.engine_socket, c.engine_ip or c.ip, c.engine_port)

    def write_connection_files(self) -> None:
        c = self.config
        c.profile_dir.create()
        common = {
            "key": self.key,
            "cluster_id": c.cluster_id,
            "profile": c.profile_dir.name,
            "location": c.location,
            "controller_pid": os.getpid(),
        }
        ConnectionInfo(urls=self.client_urls, role="client", **common).write(
            c.profile_dir.client_file(c.cluster_id)
        )
        ConnectionInfo(urls=self.engine_urls, role="engine", **common).write(
            c.profile_dir.engine_file(c.cluster_id)
        )

    def remove_connection_files(self) -> None:
        c = self.config
        for path in (c.profile_dir.client_file(c.cluster_id), c.profile_dir.engine_file(c.cluster_id)):
            try:
                info = ConnectionInfo.load(path)
                if info.controller_pid == os.getpid():
                    path.unlink()
            except (OSError, ValueError):
                pass

    # -- main loop --------------------------------------------------------------

    def serve(self) -> None:
        self.running = True
        poller = zmq.Poller()
        poller.register(self.client_socket, zmq.POLLIN)
        poller.register(self.engine_socket, zmq.POLLIN)
        check_every = max(0.05, self.config.heartbeat_interval / 2)
        next_check = time.monotonic() + check_every
        log.info("controller ready: clients %s, engines %s", self.client_urls, self.engine_urls)
        while self.running:
            timeout = max(0.0, next_check - time.monotonic())
            events = dict(poller.poll(int(timeout * 1000) + 1))
            if self.engine_socket in events:
                self._drain(self.engine_socket, self.handle_engine)
            if self.client_socket in events:
                self._drain(self.client_socket, self.handle_client)
            now = time.monotonic()
            if now >= next_check:
                self.check_heartbeats(now)
                next_check = now + check_every
        self._shutdown_engines()

    def _drain(self, sock: zmq.Socket, handler) -> None:
        for _ in range(DRAIN_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                handler(frames)
            except Exception:
                # Nothing a peer sends may take the controller down.
                log.exception("error handling a message; dropped")

    def stop(self, *_: Any) -> None:
        self.running = False

    # -- sending ----------------------------------------------------------------

    def _send(self, sock: zmq.Socket, ident: bytes, frames: list[Any]) -> bool:
        try:
            sock.send_multipart([ident, *frames], copy=False)
            return True
        except zmq.ZMQError as e:
            if e.errno == zmq.EHOSTUNREACH:
                return False
            raise

    def to_client(self, ident: bytes, frames: list[Any]) -> None:
        if not self._send(self.client_socket, ident, frames):
            log.warning("client %s is gone; dropping a message for it", ident[:8])
            self.clients.discard(ident)

    def to_engine(self, rec: EngineRecord, frames: list[Any]) -> bool:
        return self._send(self.engine_socket, rec.ident, frames)

    def reply_client(self, ident: bytes, msg_type: str, parent: str, meta: dict[str, Any]) -> None:
        header = self.signer.header(msg_type, parent=parent)
        self.to_client(ident, self.signer.pack(header, meta))

    def notify_clients(self, msg_type: str, meta: dict[str, Any]) -> None:
        frames = self.signer.pack(self.signer.header(msg_type), meta)
        for ident in list(self.clients):
            self.to_client(ident, frames)

    # -- clients ----------------------------------------------------------------

    def _unpack(self, frames: list[Any], origin: str) -> tuple[bytes, wire.Message] | None:
        ident = frames[0].bytes
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
        self.clients.add(ident)
        route = msg.header.get("route", "controller")
        if route == "direct":
            self.route_direct(ident, msg)
        elif route == "lb":
            self.route_lb(ident, msg)
        else:
            handler = getattr(self, "on_" + msg.msg_type, None)
            if handler is None:
                self.reply_client(
                    ident,
                    "error_reply",
                    msg.msg_id,
                    {"status": "error", "ename": "ValueError",
                     "evalue": f"unknown controller request {msg.msg_type!r}"},
                )
            else:
                handler(ident, msg)

    def _reply_type(self, msg_type: str) -> str:
        return msg_type[: -len("_request")] + "_reply" if msg_type.endswith("_request") else msg_type + "_reply"

    def route_direct(self, ident: bytes, msg: wire.Message) -> None:
        h = msg.header
        targets = h.get("targets")
        msg_ids = h.get("msg_ids")
        if not isinstance(targets, list) or not isinstance(msg_ids, list) or len(targets) != len(msg_ids):
            self.reply_client(ident, "error_reply", msg.msg_id, {
                "status": "error", "ename": "ValueError",
                "evalue": "direct request needs equal-length 'targets' and 'msg_ids'"})
            return
        reply_type = self._reply_type(msg.msg_type)
        for eid, mid in zip(targets, msg_ids):
            task = Task(ident, mid, reply_type, eid, False, h)
            rec = self.engines.by_id.get(eid)
            if rec is None:
                self.fail_task(task, "EngineError", f"engine {eid} is not registered")
                continue
            self.tasks[mid] = task
            rec.outstanding[mid] = False
            self.hub.submitted(h, mid, eid)
            if not self.to_engine(rec, msg.frames):
                self.engine_died(rec, "its connection is gone")

    def route_lb(self, ident: bytes, msg: wire.Message) -> None:
        task = Task(ident, msg.msg_id, self._reply_type(msg.msg_type), None, True, msg.header, msg.frames)
        self.tasks[msg.msg_id] = task
        self.hub.submitted(msg.header, msg.msg_id, None)
        self.lb_queue.append(task)
        self.schedule()

    def schedule(self) -> None:
        """Hand queued load-balanced tasks to engines with room under the hwm."""
        if not self.lb_queue:
            return
        hwm = self.config.hwm
        free = [e for e in self.engines.by_id.values() if hwm <= 0 or e.lb_in_flight < hwm]
        skipped: list[Task] = []
        while self.lb_queue and free:
            task = self.lb_queue.popleft()
            if task.msg_id not in self.tasks:
                continue  # aborted while queued
            allowed = task.header.get("lb_targets")
            candidates = free if allowed is None else [e for e in free if e.id in allowed]
            if not candidates:
                if allowed is not None and not any(eid in self.engines.by_id for eid in allowed):
                    self.fail_task(task, "ImpossibleDependency",
                                   f"none of the engines this task may run on ({allowed}) is registered")
                else:
                    skipped.append(task)
                continue
            rec = self.scheme(candidates)
            rec.lb_in_flight += 1
            rec.last_assigned = time.monotonic()
            rec.outstanding[task.msg_id] = True
            task.engine_id = rec.id
            frames, task.frames = task.frames, None
            self.hub.assigned(task.msg_id, rec.id)
            if hwm > 0 and rec.lb_in_flight >= hwm:
                free.remove(rec)
            if not self.to_engine(rec, frames):
                self.engine_died(rec, "its connection is gone")
                free = [e for e in free if e is not rec]
        self.lb_queue.extendleft(reversed(skipped))

    def fail_task(self, task: Task, ename: str, evalue: str) -> None:
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
        meta = {
            "status": "error",
            "origin": "hpcpar",
            "ename": ename,
            "evalue": evalue,
            "traceback": [f"{ename}: {evalue}"],
            "engine_info": {"engine_id": task.engine_id, "method": task.header.get("msg_type")},
        }
        self.hub.finished_task(task.msg_id, header)
        self.to_client(task.client, self.signer.pack(header, meta))

    # controller requests --------------------------------------------------------

    def on_connect_request(self, ident: bytes, msg: wire.Message) -> None:
        self.reply_client(ident, "connect_reply", msg.msg_id, {
            "engines": [e.describe() for e in self.engines.by_id.values()],
            "cluster_id": self.config.cluster_id,
            "heartbeat_timeout": self.config.heartbeat_timeout,
            "scheme": self.config.scheme,
        })

    def on_disconnect_request(self, ident: bytes, msg: wire.Message) -> None:
        self.clients.discard(ident)

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
        queued = [t.msg_id for t in self.lb_queue if t.msg_id in self.tasks]
        status["unassigned"] = queued if verbose else len(queued)
        self.reply_client(ident, "queue_status_reply", msg.msg_id, {"status": status})

    def on_abort_request(self, ident: bytes, msg: wire.Message) -> None:
        """Drop queued load-balanced tasks here; ask engines to drop theirs."""
        msg_ids = msg.meta.get("msg_ids")
        wanted = set(msg_ids) if msg_ids is not None else None
        targets = msg.meta.get("targets")
        aborted = []
        for task in list(self.lb_queue):
            if task.msg_id in self.tasks and (wanted is None and task.client == ident or wanted and task.msg_id in wanted):
                self.fail_task(task, "TaskAborted", f"task {task.msg_id} was aborted before it started")
                aborted.append(task.msg_id)
        engine_ids = targets if targets is not None else self.engines.ids()
        header = self.signer.header("abort_request", msg_ids=msg_ids)
        frames = self.signer.pack(header, {"msg_ids": msg_ids})
        for eid in engine_ids:
            rec = self.engines.by_id.get(eid)
            if rec is not None:
                self.to_engine(rec, frames)
        self.reply_client(ident, "abort_reply", msg.msg_id, {"aborted_queued": aborted})

    def on_engine_info_request(self, ident: bytes, msg: wire.Message) -> None:
        """Lets an engine that was given the client file find the engine port."""
        self.reply_client(ident, "engine_info_reply", msg.msg_id, {"urls": self.engine_urls})

    def on_hub_shutdown_request(self, ident: bytes, msg: wire.Message) -> None:
        self.reply_client(ident, "hub_shutdown_reply", msg.msg_id, {"status": "ok"})
        self.running = False

    def on_engines_request(self, ident: bytes, msg: wire.Message) -> None:
        self.reply_client(ident, "engines_reply", msg.msg_id, {
            "engines": [e.describe() for e in self.engines.by_id.values()],
            "tasks": self.hub.totals(),
        })

    # -- engines ----------------------------------------------------------------

    def handle_engine(self, frames: list[Any]) -> None:
        unpacked = self._unpack(frames, "engine")
        if unpacked is None:
            return
        ident, msg = unpacked
        mt = msg.msg_type
        if mt == "register_request":
            self.on_register(ident, msg)
            return
        rec = self.engines.by_ident.get(ident)
        if rec is None:
            # An engine we do not know (we restarted, or declared it dead):
            # ask it to register again rather than trusting its old id.
            self.engine_socket.send_multipart(
                [ident, *self.signer.pack(self.signer.header("reregister_request"))]
            )
            return
        rec.last_seen = time.monotonic()
        if mt == "heartbeat":
            self.engine_socket.send_multipart(
                [ident, *self.signer.pack(self.signer.header("heartbeat_reply"))]
            )
        elif mt.endswith("_reply"):
            self.on_engine_reply(rec, msg)
        elif mt == "stream":
            task = self.tasks.get(msg.header.get("parent"))
            if task is not None:
                self.to_client(task.client, msg.frames)
        elif mt == "unregister_request":
            self.unregister(rec, "it is shutting down", fail_with="EngineError")

    def on_register(self, ident: bytes, msg: wire.Message) -> None:
        m = msg.meta
        known = ident in self.engines.by_ident
        rec = self.engines.register(ident, str(m.get("uuid", "")), m.get("requested_id"), dict(m.get("info") or {}))
        reply = self.signer.header("register_reply", parent=msg.msg_id)
        self.engine_socket.send_multipart([ident, *self.signer.pack(reply, {
            "id": rec.id,
            "heartbeat_interval": self.config.heartbeat_interval,
            "heartbeat_timeout": self.config.heartbeat_timeout,
        })])
        if not known:
            log.info("engine %d registered (%s pid %s)", rec.id, rec.info.get("hostname"), rec.info.get("pid"))
            self.notify_clients("engine_registered", {"engine": rec.describe()})
            self.schedule()

    def on_engine_reply(self, rec: EngineRecord, msg: wire.Message) -> None:
        parent = msg.header.get("parent")
        task = self.tasks.pop(parent, None)
        if task is None:
            return  # already failed on the engine's behalf (e.g. declared dead then back)
        lb = rec.outstanding.pop(parent, False)
        rec.completed += 1
        if lb:
            rec.lb_in_flight -= 1
        self.to_client(task.client, msg.frames)
        self.hub.finished_task(parent, msg.header)
        if lb:
            self.schedule()

    def check_heartbeats(self, now: float) -> None:
        limit = self.config.heartbeat_timeout
        for rec in list(self.engines.by_id.values()):
            if now - rec.last_seen > limit:
                self.engine_died(rec, f"no heartbeat for {now - rec.last_seen:.1f} s")

    def engine_died(self, rec: EngineRecord, why: str) -> None:
        log.warning("engine %d (%s pid %s) is lost: %s", rec.id, rec.info.get("hostname"), rec.info.get("pid"), why)
        self.unregister(rec, f"died or became unreachable ({why})", fail_with="EngineError")
        # If it is only slow, it must not go on running work we reported as failed.
        try:
            self.engine_socket.send_multipart(
                [rec.ident, *self.signer.pack(self.signer.header("shutdown_request"), {"reason": why})],
                zmq.NOBLOCK,
            )
        except zmq.ZMQError:
            pass

    def unregister(self, rec: EngineRecord, why: str, fail_with: str) -> None:
        self.engines.remove(rec)
        for mid in list(rec.outstanding):
            task = self.tasks.get(mid)
            if task is not None:
                self.fail_task(task, fail_with, f"engine {rec.id} {why} while holding task {mid}")
        rec.outstanding.clear()
        self.notify_clients("engine_unregistered", {"engine": rec.describe(), "reason": why})
        self.schedule()

    def _shutdown_engines(self) -> None:
        frames = self.signer.pack(self.signer.header("shutdown_request"), {"reason": "controller stopping"})
        for rec in list(self.engines.by_id.values()):
            try:
                self.engine_socket.send_multipart([rec.ident, *frames], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        for task in list(self.tasks.values()):
            self.fail_task(task, "EngineError", "the controller shut down before the task finished")
        self.notify_clients("controller_stopping", {})
        time.sleep(0.05)  # let the sockets flush what was just queued

    def close(self) -> None:
        self.remove_connection_files()
        self.client_socket.close(linger=200)
        self.engine_socket.close(linger=200)
        self.ctx.term()


def run_controller(config: ControllerConfig) -> int:
    ctl = Controller(config)
    ctl.bind()
    ctl.write_connection_files()
    signal.signal(signal.SIGTERM, ctl.stop)
    signal.signal(signal.SIGINT, ctl.stop)
    try:
        ctl.serve()
    finally:
        ctl.close()
    return 0
