"""The controller process: two ROUTER sockets, one event loop.

Clients reach the controller through ONE port and engines through ONE port;
channels are multiplexed by message type. Each request costs one hop here:
read the header, verify the signature, forward the frames untouched
(zero-copy) to the engine(s) or the load balancer. Task records go to the
hub's store thread (hub.py), off the path of replies.
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

from .. import security, sharedmem, wire
from ..connection import ConnectionInfo, new_key
from ..forwarding.routes import Forwarding
from ..netutil import advertised_addresses, bind_address
from ..paths import ProfileDir, private_file
from . import heap
from .clients import ClientRequests
from .engines import EngineRecord, EngineRegistry
from .hub import Hub
from .lifecycle import EngineLifecycle
from .loadbalancer import LoadBalancer
from .recovery import Recovery
from .routing import Routing
from .scheduler import get_scheme
from .taskdb import open_backend
from .tasks import ReplyGroup, Task

log = logging.getLogger("hpcpar.controller")

SENT, GONE, DROPPED = 1, 0, -1  # what to_client did
CLIENT_SEND_HWM = 32  # messages per client in libzmq's queue; then the backlog below
BACKLOG_BYTES = 32 << 20  # per client, held here while it does not read; then replies are dropped
MAX_UNDELIVERED = 1_000_000  # msg_ids remembered per stalled client (then it must resync)
_NOBLOCK = int(zmq.NOBLOCK)
HUB_BEHIND = 16 << 20  # bytes the store thread may lag behind before the loop stops reading peers
DRAIN_BATCH = 256  # messages read from one socket before looking at the others
COPY_BELOW = 64 << 10  # smaller received frames are copied out of libzmq's buffers (see wire.drain)

__all__ = ["Controller", "ControllerConfig", "ReplyGroup", "Task", "run_controller"]


@dataclass(slots=True)
class _Backlog:
    items: deque[tuple[list[Any], tuple[str, ...]]] = field(default_factory=deque)
    nbytes: int = 0


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
    max_message_size: int = security.DEFAULT_MAX_MESSAGE_SIZE  # bytes per frame; -1 = unlimited
    key: str | None = None
    transport: str = "auto"  # auto (curve beyond loopback), curve or hmac: see security.py
    curve_keys: security.CurveKeys | None = None  # None: new ones (--restore: the previous ones)
    replay_window: float = security.DEFAULT_REPLAY_WINDOW
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



class Controller(ClientRequests, Routing, EngineLifecycle, Recovery):
    """The controller's sockets and poll loop; its roles are mixins: client
    requests (clients.py), routing (routing.py), engine lifecycle (lifecycle.py),
    crash recovery (recovery.py)."""

    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        if config.restore:
            self._load_previous_connection()
        self.key = config.key or new_key()
        self.transport = security.resolve_transport(config.transport, config.ip, config.engine_ip or config.ip)
        self.curve = (config.curve_keys or security.CurveKeys.generate()) if self.transport == "curve" else None
        self.replay = security.ReplayGuard(config.replay_window)
        self.undelivered: dict[bytes, list[str]] = {}  # client that cannot take more -> replies it missed
        self.backlog: dict[bytes, _Backlog] = {}  # client whose queue is full -> what waits for it
        self.signer = wire.Signer(self.key.encode("ascii"), self.transport)
        self.shm_prefix = sharedmem.cluster_prefix(config.cluster_id, self.key.encode("ascii"))
        self.engines = EngineRegistry()
        self.tasks: dict[str, Task] = {}
        self.clients: set[bytes] = set()
        self.scheme = get_scheme(config.scheme)
        self.lb = LoadBalancer(self)
        self.running = False
        self._auth_warned: dict[bytes, float] = {}
        self._refusals_logged: dict[bytes, tuple[float, int]] = {}  # engine -> (last warning, not logged since)
        self._engines_dirty = False
        self._resubmits: dict[str, dict[str, Any]] = {}
        self._ping: list[Any] = []
        self._expect_until = time.monotonic() + 60.0  # how long restored engines may take to re-attach
        self._bulk_until = 0.0  # heartbeat timeouts are extended until then (large fan-outs)
        self._ping_made = -1e9
        self.ctx = zmq.Context()
        self.auth: security.Authenticator | None = None
        if self.curve is not None:
            # Engines may also be started from the client file (load_engine_connection).
            c = self.curve
            self.auth = security.Authenticator(self.ctx, {"client": {c.client_public},
                                                          "engine": {c.engine_public, c.client_public}})
        else:  # hmac: a PLAIN login with a token derived from the key (see security.py)
            self.auth = security.Authenticator(self.ctx, {}, plain=security.plain_token(self.key))
        self.client_socket = self._router("client", CLIENT_SEND_HWM)
        self.engine_socket = self._router("engine", 0)  # engines are ours and always read
        self.forwarding = Forwarding(self.engine_socket)  # routes to engines behind forwarders
        self.hub_pipe = self.ctx.socket(zmq.PAIR)
        self.hub_pipe.bind(f"inproc://hpcpar-hub-{id(self)}")
        config.profile_dir.create()
        if not config.restore and config.db == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                config.db_path.with_name(config.db_path.name + suffix).unlink(missing_ok=True)
        if config.db == "sqlite":
            os.close(private_file(config.db_path))  # 0600 before SQLite opens it (its -wal/-shm follow)
        backend = open_backend(config.db, config.db_path)
        self.hub = Hub(backend, wire.Signer(self.key.encode("ascii"), self.transport), self.ctx,
                       f"inproc://hpcpar-hub-{id(self)}", config.db_store_limit)
        self.client_urls: list[str] = []
        self.engine_urls: list[str] = []
        self._recovery_init()
        if config.restore:
            self._restore_state(backend)
        else:  # a fresh cluster: the engines an earlier one listed are not coming back
            config.engines_path.unlink(missing_ok=True)
            self._engines_journal.unlink(missing_ok=True)

    # -- set-up ---------------------------------------------------------------

    def _router(self, domain: str, send_hwm: int) -> zmq.Socket:
        s = self.ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.ROUTER_MANDATORY, 1)  # tell us when a peer is gone
        # Bounded per peer: a flood stalls on RCVHWM; clients' sends never block (to_client).
        security.bound(s, send_hwm=send_hwm, max_message_size=self.config.max_message_size)
        if self.curve is not None:
            security.serve(s, self.curve.server_secret, domain)
        else:
            security.serve_plain(s, domain)
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
            "transport": self.transport,
            "max_message_size": c.max_message_size,
        }
        client = self.curve.for_role("client") if self.curve else {}
        engine = self.curve.for_role("engine") if self.curve else {}
        if self.curve is not None:
            security.save_keys(c.profile_dir.controller_key_file(c.cluster_id), self.curve, os.getpid())
        ConnectionInfo(urls=self.client_urls, role="client", **common, **client).write(
            c.profile_dir.client_file(c.cluster_id))
        ConnectionInfo(urls=self.engine_urls, role="engine", **common, **engine).write(
            c.profile_dir.engine_file(c.cluster_id))

    def remove_connection_files(self) -> None:
        c = self.config
        for path in (c.profile_dir.client_file(c.cluster_id), c.profile_dir.engine_file(c.cluster_id)):
            try:
                if ConnectionInfo.load(path).controller_pid == os.getpid():
                    path.unlink()
            except (OSError, ValueError):
                pass
        security.remove_keys(c.profile_dir.controller_key_file(c.cluster_id), os.getpid())

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
        paused = False
        hub = self.hub
        while self.running:
            # Flow control: while the task database lags far behind (say, hundreds of 1 MB
            # results a second), leave new messages in the peers' queues (bounded by their
            # high-water marks) instead of growing this process.
            if (hub.queued_bytes - hub.stored_bytes > HUB_BEHIND) != paused:
                paused = not paused
                for sock in (self.engine_socket, self.client_socket):
                    if paused:
                        poller.unregister(sock)
                    else:
                        poller.register(sock, zmq.POLLIN)
                if paused:
                    log.info("the task database is %d MB behind: reading peers again when it catches up",
                             (hub.queued_bytes - hub.stored_bytes) >> 20)
                else:  # the heartbeats that waited are read now: a full timeout to do so
                    self._bulk_until = max(self._bulk_until, time.monotonic() + self.config.heartbeat_timeout)
            timeout = max(0.0, next_check - time.monotonic())
            events = dict(poller.poll(int(timeout * 1000) + 1))
            if self.engine_socket in events:
                self._drain(self.engine_socket, self.handle_engine)
            if self.client_socket in events:
                self._drain(self.client_socket, self.handle_client)
            if self.hub_pipe in events:
                self._drain(self.hub_pipe, self.handle_hub)
            if self.backlog:
                self._flush_backlogs()
            now = time.monotonic()
            if now - next_check > self.config.heartbeat_interval:
                self._was_busy(now, now - next_check)
            if now >= next_check:
                if self.engines.expected and now > self._expect_until:
                    self.engines.expected.clear()  # engines that did not come back after a restart
                    self.lb.schedule()
                self.check_recovery(now)
                self.send_acks()
                if not paused:  # meanwhile heartbeats wait in the engines' queues
                    self.check_heartbeats(now)
                self.forwarding.expire(now, 3 * self.config.heartbeat_timeout + 10.0)
                self.lb.check_timeouts(now)
                self.replay.prune(now)
                if self.undelivered:
                    self._notify_undelivered()
                if self._engines_dirty:
                    self._save_engines()
                next_check = now + check_every

    def _was_busy(self, now: float, late: float) -> None:
        """The loop was busy ``late`` s past a heartbeat check (one huge message to verify, a
        burst): heartbeats that came meanwhile wait unread in the engine socket. No engine is
        judged on that time: each gets it back, and a full timeout on top, to be heard from."""
        log.info("the controller was busy for %.1f s (a large message, a burst): engines get %.1f s "
                 "more before a missing heartbeat counts", late, late + self.config.heartbeat_timeout)
        self._bulk_until = max(self._bulk_until, now + late + self.config.heartbeat_timeout)

    def _drain(self, sock: zmq.Socket, handler) -> None:
        for frames in wire.drain(sock, DRAIN_BATCH, COPY_BELOW):
            try:
                handler(frames)
            except Exception as e:
                # Nothing a peer sends may take the controller down; a client's request that
                # hits a bug here fails at once with the reason instead of timing out.
                log.exception("error handling a message; dropped")
                if sock is self.client_socket:
                    self._tell_refused(frames, f"{type(e).__name__}: {e}", wire.FAILED)

    def stop(self, *_: Any) -> None:
        self.running = False

    def stop_now(self, *_: Any) -> None:
        """Signal handler: leave the loop at once, even from inside poll()."""
        if self.running:
            self.running = False
            raise _Stopping

    # -- sending ----------------------------------------------------------------

    def to_client(self, ident: bytes, frames: list[Any], msg_ids: tuple[str, ...] = ()) -> int:
        """SENT (or queued here), GONE (not connected) or DROPPED. Never blocks: a client that
        stops reading fills its CLIENT_SEND_HWM pipe, then a backlog here of at most
        BACKLOG_BYTES; beyond that its replies (``msg_ids``) are dropped, to be fetched from
        the task database when it reads again (missed)."""
        if not ident:
            return GONE
        if ident not in self.backlog:
            try:
                wire.send_frames(self.client_socket, [ident, *frames], _NOBLOCK)
                return SENT
            except zmq.ZMQError as e:
                if e.errno != zmq.EAGAIN:
                    if e.errno != zmq.EHOSTUNREACH:
                        raise
                    self._client_gone(ident)
                    return GONE
        return self._hold(ident, frames, msg_ids)

    def _hold(self, ident: bytes, frames: list[Any], msg_ids: tuple[str, ...]) -> int:
        held = self.backlog.get(ident)
        if held is None:
            held = self.backlog[ident] = _Backlog()
        size = sum(len(f) for f in frames)
        if held.items and held.nbytes + size > BACKLOG_BYTES:  # one message always fits
            self.missed(ident, msg_ids)
            return DROPPED
        held.items.append((frames, msg_ids))
        held.nbytes += size
        return SENT

    def _flush_backlogs(self) -> None:
        """Send what clients could not take before, in order, while they take it."""
        for ident, held in list(self.backlog.items()):
            while held.items:
                frames, _ = held.items[0]
                try:
                    wire.send_frames(self.client_socket, [ident, *frames], _NOBLOCK)
                except zmq.ZMQError as e:
                    if e.errno == zmq.EAGAIN:
                        break
                    if e.errno != zmq.EHOSTUNREACH:
                        raise
                    self._client_gone(ident)
                    break
                held.items.popleft()
                held.nbytes -= sum(len(f) for f in frames)
            else:
                self.backlog.pop(ident, None)

    def _client_gone(self, ident: bytes) -> None:
        log.info("client %s is not connected; it can fetch this later (get_result)", ident[:8])
        self.clients.discard(ident)
        self.undelivered.pop(ident, None)
        if self.backlog.pop(ident, None) is not None:
            heap.release()  # its backlog's memory back to the OS at once (the replies are in the database)

    def missed(self, ident: bytes, msg_ids: tuple[str, ...] | list[str]) -> None:
        """Replies a stalled client did not get: the database keeps them (Hub.finished keep=True);
        it is told their ids once it reads again."""
        waiting = self.undelivered.get(ident)
        if waiting is None:
            log.warning("client %s stopped reading; replies it cannot take stay in the task database "
                        "and it is told their ids when it reads again", ident[:8])
            waiting = self.undelivered[ident] = []
        if len(waiting) < MAX_UNDELIVERED:
            waiting.extend(msg_ids)

    def _notify_undelivered(self) -> None:
        for ident, msg_ids in list(self.undelivered.items()):
            if ident in self.backlog:
                continue  # after what it is still being sent
            batch = msg_ids[:10_000]
            frames = self.signer.pack(self.signer.header("undelivered_notice"), {"msg_ids": batch})
            if self.to_client(ident, frames) == SENT and ident not in self.backlog:
                del msg_ids[:len(batch)]
                if not msg_ids:
                    self.undelivered.pop(ident, None)
            elif ident in self.backlog:  # the notice itself is queued: do not queue another
                self.undelivered.pop(ident, None)

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

    def close(self) -> None:
        self.hub.close()
        self.remove_connection_files()
        sharedmem.remove_leftovers(self.shm_prefix)  # files of clients or engines that died
        self.client_socket.close(linger=200)
        self.engine_socket.close(linger=200)
        self.hub_pipe.close(linger=0)
        if self.auth is not None:
            self.auth.close()
        self.ctx.term()



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

