"""A forwarder: engines connect to it as to the controller; it relays to the controller.

Why: with hundreds of engines, the controller's one socket sends a broadcast
once per engine (a 10 MB push to 256 engines is 2.5 GB through it). Engines
on a node talk to a forwarder on that node instead, and the controller sends
a broadcast once per forwarder, naming the engines below it (relay.FANOUT).
A forwarder can itself sit below another forwarder, which makes a tree.

Relaying is zero-copy and blind: messages stay signed by the engine and by
the controller, and the forwarder never unpickles them. It holds the cluster
key (it is in the engine connection file it reads anyway) for heartbeats only:
it verifies its engines' heartbeats, reports them to the controller as one
signed ``heartbeat_batch`` every HEARTBEAT_FLUSH seconds, and answers them
itself while the controller is heard from; so the controller's heartbeat
work is per forwarder, not per engine. For a coalescing broadcast it holds
the replies of its engines and sends them up as one message (relay.BATCHED),
flushed when all are in or after BATCH_WAIT seconds, whichever comes first.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from .. import security, wire
from ..connection import ConnectionInfo
from ..netutil import advertised_addresses, bind_address
from .relay import BATCHED, FANOUT, RELAYED, SELF, fanout_spec, is_mark, read_spec

log = logging.getLogger("hpcpar.forwarder")

HELLO_EVERY = 5.0  # seconds between hellos to the controller (also how it knows we are alive)
BATCH_WAIT = 1.0  # longest a reply waits for the other replies of its broadcast
BATCH_BYTES = 64 << 20  # a batch holding this much is sent at once
HEARTBEAT_FLUSH = 0.2  # seconds between heartbeat reports to the controller
PING_EVERY = 3.0  # seconds between heartbeat answers to one engine (as the controller does)
HEARTBEAT_TAG = b'"msg_type":"heartbeat"'
ANSWER_WHILE = 15.0  # answer engines' heartbeats only if the controller spoke this recently


@dataclass
class _Batch:
    waiting: set[str]
    parts: list[list[Any]] = field(default_factory=list)
    nbytes: int = 0
    since: float = field(default_factory=time.monotonic)


class Forwarder:
    def __init__(self, upstream: ConnectionInfo, ip: str = "127.0.0.1", port: int = 0,
                 controller_timeout: float = 60.0, name: str = "") -> None:
        self.upstream_info = upstream
        self.signer = wire.Signer(upstream.key_bytes, upstream.transport)
        self.name = name or uuid.uuid4().hex[:8]
        self.ident = f"fwd-{self.name}-{uuid.uuid4().hex[:8]}".encode()
        self.controller_timeout = controller_timeout
        self.ctx = zmq.Context()
        self.replay = security.ReplayGuard()  # for the heartbeats it takes itself (the controller checks the rest)
        self.auth: security.Authenticator | None = None
        self.server_keys: tuple[str, str] | None = None
        self.down = self.ctx.socket(zmq.ROUTER)
        self.down.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.down.setsockopt(zmq.LINGER, 0)
        # Bounded intake per peer (a flood stalls, see security.RECEIVE_HWM); sends to engines unbounded.
        security.bound(self.down, send_hwm=0, max_message_size=upstream.max_message_size)
        if upstream.transport == "curve":
            # Our own server key pair; engines below hold the cluster's engine key pair (from our file).
            public, secret = (k.decode("ascii") for k in zmq.curve_keypair())
            self.server_keys = (public, secret)
            self.auth = security.Authenticator(self.ctx, {"engine": {upstream.curve_public_key}})
            security.serve(self.down, secret, "engine")
        else:  # hmac: engines below log in with the cluster's PLAIN token, as at the controller
            self.auth = security.Authenticator(self.ctx, {}, plain=security.plain_token(upstream.key_bytes))
            security.serve_plain(self.down, "engine")
        self.down.bind(f"tcp://{bind_address(ip)}:{port}")
        real_port = int(self.down.getsockopt(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1])
        self.urls = [f"tcp://{a}:{real_port}" for a in advertised_addresses(ip)]
        self.up = self.ctx.socket(zmq.DEALER)
        self.up.setsockopt(zmq.IDENTITY, self.ident)
        for opt in (zmq.SNDHWM, zmq.RCVHWM, zmq.LINGER):
            self.up.setsockopt(opt, 0)
        security.connect_as(self.up, upstream)
        self.up.connect(upstream.urls[0])
        self.batches: dict[str, _Batch] = {}  # msg_id -> the batch waiting for its reply
        self.running = False
        self.last_contact = time.monotonic()
        self.relayed_up = 0
        self.relayed_down = 0
        self.beats: set[bytes] = set()  # engines whose verified heartbeat is not reported yet
        self.pinged: dict[bytes, float] = {}  # engine -> when we last answered its heartbeat
        self._ping: list[Any] = []
        self._ping_made = -1e9
        self._next_prune = time.monotonic() + 30.0

    def connection_info(self) -> ConnectionInfo:
        """The engine connection file engines below this forwarder use: ours, with our URL."""
        u = self.upstream_info
        # forwarder_pid: an engine on this host can tell a live forwarder's file from a stale one.
        curve = {} if self.server_keys is None else {
            "curve_server_key": self.server_keys[0], "curve_public_key": u.curve_public_key,
            "curve_secret_key": u.curve_secret_key}
        return ConnectionInfo(key=u.key, urls=self.urls, role="engine", cluster_id=u.cluster_id,
                              profile=u.profile, location=u.location, controller_pid=u.controller_pid,
                              transport=u.transport, max_message_size=u.max_message_size, **curve,
                              extra={"forwarder_pid": os.getpid()})

    # -- the loop ---------------------------------------------------------------------

    def serve(self) -> None:
        self.running = True
        poller = zmq.Poller()
        poller.register(self.down, zmq.POLLIN)
        poller.register(self.up, zmq.POLLIN)
        next_hello = 0.0
        next_report = time.monotonic() + HEARTBEAT_FLUSH
        while self.running:
            now = time.monotonic()
            if now >= next_hello:
                self.up.send_multipart(self.signer.pack(self.signer.header("forwarder_hello"),
                                                        {"name": self.name, "urls": self.urls, "pid": os.getpid()}))
                next_hello = now + HELLO_EVERY
            if now >= next_report:
                self._report_beats()
                next_report = now + HEARTBEAT_FLUSH
            events = dict(poller.poll(int((min(next_hello, next_report) - now) * 1000) + 1))
            if self.up in events:
                self.last_contact = time.monotonic()
                for frames in wire.drain(self.up, 256):
                    self._from_above(frames)
            if self.down in events:
                for frames in wire.drain(self.down, 256):
                    self._from_below(frames)
            if self.batches:
                self._flush_old(time.monotonic())
            if time.monotonic() - self.last_contact > self.controller_timeout:
                log.error("no word from the controller for %.0f s; exiting", self.controller_timeout)
                return

    def stop(self, *_: Any) -> None:
        self.running = False

    def close(self) -> None:
        self.down.close(linger=500)  # the controller's last words to our engines
        self.up.close(linger=500)
        if self.auth is not None:
            self.auth.close()
        self.ctx.term()

    # -- downward ------------------------------------------------------------------------

    def _send_down(self, route: list[Any]) -> None:
        try:
            wire.send_frames(self.down, route)
            self.relayed_down += 1
        except zmq.ZMQError as e:
            if e.errno != zmq.EHOSTUNREACH:
                raise
            # Gone below us: the controller notices by its heartbeats, as for a direct engine.
            log.debug("peer %r below is gone; message dropped", route[0])

    def _from_above(self, frames: list[Any]) -> None:
        if len(frames) < 2:
            return
        if is_mark(frames[0], SELF):
            self._own_message(frames[1:])
            return
        if not is_mark(frames[0], FANOUT):
            self._send_down(frames)
            return
        try:
            targets, batch = read_spec(frames[1])
        except (ValueError, KeyError, TypeError):
            log.warning("dropped a broadcast with an unreadable target list")
            return
        signed = frames[2:]
        below: dict[bytes, list[tuple[tuple[bytes, ...], str]]] = {}
        mine = []
        for path, mid in targets:
            if len(path) == 1:
                mine.append(mid)
                self._send_down([path[0], *signed])
            elif path:
                below.setdefault(path[0], []).append((path[1:], mid))
        if batch and len(mine) > 1:
            b = _Batch(set(mine))
            for mid in mine:
                self.batches[mid] = b
        for hop, sub in below.items():
            if len(sub) == 1:
                self._send_down([hop, *sub[0][0], *signed])
            else:
                self._send_down([hop, FANOUT, fanout_spec(sub, batch), *signed])

    def _own_message(self, frames: list[Any]) -> None:
        try:
            msg = self.signer.unpack(frames)
        except wire.BadMessage as e:
            log.warning("dropped a message for this forwarder that does not verify: %s", e)
            return
        if msg.msg_type == "shutdown_request":
            log.info("the controller is stopping; so do we")
            self.running = False

    # -- upward --------------------------------------------------------------------------

    def _from_below(self, frames: list[Any]) -> None:
        if len(frames) < 2:
            return
        if len(frames) > 2 and len(frames[1]) == 32:  # signed by an engine directly below us
            # Signer.header writes msg_type as "msg_type":"..." : a cheap test before parsing.
            if HEARTBEAT_TAG in frames[2].bytes and self._beat(frames):
                return
            parent = self._header_of(frames[2]).get("parent") if self.batches else None
            b = self.batches.pop(parent, None) if isinstance(parent, str) else None
            if b is not None:
                b.waiting.discard(parent)
                if not b.parts:
                    b.since = time.monotonic()  # the first reply held starts the wait
                b.parts.append(frames)
                b.nbytes += sum(len(f) for f in frames)
                if not b.waiting or b.nbytes >= BATCH_BYTES:
                    self._flush(b)
                return
        elif len(frames) == 4 and is_mark(frames[1], wire.REFUSED) and self.batches:
            self._refused(frames[2].bytes.decode(errors="replace"))  # relayed below, unread otherwise
        wire.send_frames(self.up, [RELAYED, *frames])
        self.relayed_up += 1

    def _refused(self, msg_id: str) -> None:
        """An engine refused a request that did not verify (engine/refusal.py): the controller
        fails that task, so no reply will come for it; the rest of its batch need not wait."""
        b = self.batches.pop(msg_id, None)
        if b is not None:
            b.waiting.discard(msg_id)
            if not b.waiting:
                self._flush(b)

    @staticmethod
    def _header_of(header_frame: Any) -> dict[str, Any]:
        try:
            header = json.loads(header_frame.bytes)
        except (ValueError, UnicodeDecodeError):
            return {}
        return header if isinstance(header, dict) else {}

    def _beat(self, frames: list[Any]) -> bool:
        """Take an engine's heartbeat here; False (relay it) if it does not verify, so the
        controller rejects it and tells the engine, as for a direct engine."""
        try:
            msg = self.signer.unpack(frames[1:])
        except wire.BadMessage:
            return False
        if msg.msg_type != "heartbeat":
            return False
        if not self.replay.fresh(msg.header):
            return True  # a replayed heartbeat: taken (not relayed) and ignored
        ident = frames[0].bytes
        self.beats.add(ident)
        now = time.monotonic()
        if now - self.last_contact < ANSWER_WHILE and now - self.pinged.get(ident, -1e9) >= PING_EVERY:
            self.pinged[ident] = now
            if now - self._ping_made > 1.0:
                self._ping = self.signer.pack(self.signer.header("heartbeat_reply"))
                self._ping_made = now
            self._send_down([ident, *self._ping])
        return True

    def _report_beats(self) -> None:
        if not self.beats:
            return
        beats, self.beats = self.beats, set()
        names = [i.decode("latin-1") for i in beats]
        self.up.send_multipart(self.signer.pack(self.signer.header("heartbeat_batch"), {"engines": names}))
        now = time.monotonic()
        if now > self._next_prune:  # forget engines that left (the others are answered every PING_EVERY)
            self.pinged = {i: t for i, t in self.pinged.items() if now - t < 2 * PING_EVERY}
            self._next_prune = now + 30.0

    def _flush(self, b: _Batch) -> None:
        """Send what the batch holds; replies still missing will travel alone."""
        for mid in b.waiting:
            self.batches.pop(mid, None)
        b.waiting.clear()
        if len(b.parts) == 1:
            wire.send_frames(self.up, [RELAYED, *b.parts[0]])
        elif b.parts:
            counts = json.dumps([len(p) for p in b.parts]).encode()
            wire.send_frames(self.up, [BATCHED, counts, *(f for p in b.parts for f in p)])
        self.relayed_up += 1 if b.parts else 0
        b.parts = []

    def _flush_old(self, now: float) -> None:
        # A batch nobody has answered yet stays (its tasks may run for hours); one
        # holding replies waits at most BATCH_WAIT for the rest.
        for b in {id(b): b for b in self.batches.values()}.values():
            if b.parts and now - b.since > BATCH_WAIT:
                self._flush(b)


def run_forwarder(upstream: ConnectionInfo, write_to: Path, ip: str = "127.0.0.1", port: int = 0,
                  controller_timeout: float = 60.0, name: str = "") -> int:
    fwd = Forwarder(upstream, ip, port, controller_timeout, name)
    fwd.connection_info().write(write_to)
    signal.signal(signal.SIGTERM, fwd.stop)
    signal.signal(signal.SIGINT, fwd.stop)
    log.info("forwarder %s: engines connect to %s (file %s); upstream %s",
             fwd.name, fwd.urls, write_to, upstream.urls[0])
    try:
        fwd.serve()
    finally:
        try:
            if json.loads(write_to.read_text()).get("urls") == fwd.urls:
                write_to.unlink()
        except (OSError, ValueError):
            pass
        fwd.close()
    return 0
