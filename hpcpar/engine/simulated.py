"""Simulated engines: many per process, speaking the real protocol.

For testing one controller at scales past what one machine can run as real
engine processes (thousands). Each simulated engine has its own socket and
identity, registers, heartbeats, and answers requests with a trivial
successful reply (result None) without running the code.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from .. import security, serialize, targetset, wire
from ..connection import ConnectionInfo
from .refusal import Refusals

log = logging.getLogger("hpcpar.engine.simulated")


@dataclass
class _Sim:
    sock: zmq.Socket
    uuid: str
    id: int | None = None
    next_beat: float = 0.0


class SimulatedEngines:
    def __init__(self, info: ConnectionInfo, n: int, heartbeat_interval: float = 1.0,
                 urls: list[str] | None = None) -> None:
        self.info = info
        self.signer = wire.Signer(info.key_bytes, info.transport)
        self.refusals = Refusals()
        self.ctx = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, n + 64)
        self.heartbeat_interval = heartbeat_interval
        # Several URLs (e.g. forwarders'): engines are dealt over them in turn.
        self.urls = list(urls or [info.urls[0]])
        self.sims: list[_Sim] = []
        self.by_socket: dict[zmq.Socket, _Sim] = {}
        self.poller = zmq.Poller()
        self.none_payload, _ = serialize.dumps(None)
        self.replies_sent = 0
        for i in range(n):
            sock = self.ctx.socket(zmq.DEALER)
            uid = uuid.uuid4().hex
            sock.setsockopt(zmq.IDENTITY, uid.encode())
            sock.setsockopt(zmq.LINGER, 0)
            security.connect_as(sock, info)
            sock.connect(self.urls[i % len(self.urls)])
            sim = _Sim(sock, uid)
            self.sims.append(sim)
            self.by_socket[sock] = sim
            self.poller.register(sock, zmq.POLLIN)

    def _register(self, sim: _Sim) -> None:
        hdr = self.signer.header("register_request")
        sim.sock.send_multipart(self.signer.pack(hdr, {
            "uuid": sim.uuid,
            "requested_id": sim.id,
            "info": {"hostname": socket.gethostname(), "pid": os.getpid(), "simulated": True},
        }))

    def register_all(self) -> None:
        for sim in self.sims:
            self._register(sim)

    def registered(self) -> int:
        return sum(1 for s in self.sims if s.id is not None)

    def run(self, duration: float | None = None, on_tick: Callable[[float], None] | None = None,
            poll_ms: int = 50) -> None:
        """Serve until ``duration`` seconds pass (forever with None); ``on_tick(now)`` after
        each round of heartbeats (benchmarks send more traffic from there)."""
        end = None if duration is None else time.monotonic() + duration
        now = time.monotonic()
        for sim in self.sims:  # spread heartbeats over one interval
            sim.next_beat = now + random.uniform(0, self.heartbeat_interval)
        while end is None or time.monotonic() < end:
            for sock, _ in self.poller.poll(poll_ms):
                sim = self.by_socket[sock]
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._handle(sim, frames)
            now = time.monotonic()
            for sim in self.sims:
                if sim.id is not None and now >= sim.next_beat:
                    sim.sock.send_multipart(self.signer.pack(self.signer.header("heartbeat")))
                    sim.next_beat = now + self.heartbeat_interval
            if on_tick is not None:
                on_tick(now)

    def _handle(self, sim: _Sim, frames: list[Any]) -> None:
        try:
            msg = self.signer.unpack(frames)
        except wire.BadMessage as e:  # not answered: named to the controller, which fails it (refusal.py)
            notice = self.refusals.notice(frames, sim.id, str(e))
            if notice is not None:
                sim.sock.send_multipart(notice)
            return
        mt = msg.msg_type
        if mt == "register_reply":
            sim.id = int(msg.meta["id"])
            # One socket serves as both control and work socket here.
            sim.sock.send_multipart(self.signer.pack(self.signer.header("work_hello"), {"uuid": sim.uuid}))
            self.heartbeat_interval = float(msg.meta.get("heartbeat_interval", self.heartbeat_interval))
        elif mt == "reregister_request":
            self._register(sim)
        elif mt == "work_hello_reply":
            pass
        elif mt == "shutdown_request":
            sim.id = None
        elif mt.endswith("_request") and mt not in ("abort_request", "interrupt_request", "signal_request"):
            direct = msg.header.get("route") == "direct"
            msg_id = targetset.task_id(msg.msg_id, sim.id) if direct else msg.msg_id
            now = wire.now()
            header = self.signer.header(mt.removesuffix("_request") + "_reply", parent=msg_id,
                                        engine_id=sim.id, started=now, completed=now, status="ok")
            meta = {"status": "ok", "stdout": "", "stderr": "",
                    "engine_info": {"engine_id": sim.id, "engine_uuid": sim.uuid}}
            sim.sock.send_multipart(self.signer.pack(header, meta, self.none_payload))
            self.replies_sent += 1

    def close(self) -> None:
        for sim in self.sims:
            sim.sock.close(linger=0)
        self.ctx.term()
