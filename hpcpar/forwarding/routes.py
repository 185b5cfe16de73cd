"""The controller's side of forwarders: which engines sit behind which forwarder, and
how a message or a broadcast reaches them (see relay.py for the frames).

An engine connected directly has an empty path; its messages go out exactly as
before forwarders existed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from .. import wire
from . import relay


@dataclass
class ForwarderInfo:
    path: tuple[bytes, ...]  # routing identities from the controller down to this forwarder
    name: str
    pid: int | None
    urls: list[str]
    last_seen: float = field(default_factory=time.monotonic)


class Forwarding:
    """Routes to engines, and the counters that show what a broadcast cost."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.via: dict[bytes, tuple[bytes, ...]] = {}  # engine identity -> forwarder path (absent: direct)
        self.forwarders: dict[tuple[bytes, ...], ForwarderInfo] = {}
        self.request_copies = 0  # request messages sent to engines or forwarders
        self.fanouts = 0  # of which broadcasts handed to a forwarder
        self.batched_replies = 0  # replies that arrived inside a forwarder's batch

    def hello(self, path: tuple[bytes, ...], ident: bytes, meta: dict[str, Any]) -> None:
        full = (*path, ident)
        self.forwarders[full] = ForwarderInfo(full, str(meta.get("name", "")), meta.get("pid"),
                                              list(meta.get("urls") or []))

    def seen(self, full: tuple[bytes, ...]) -> None:
        """A forwarder reported heartbeats: it is alive (and known, even before its next hello)."""
        info = self.forwarders.get(full)
        if info is None:
            self.forwarders[full] = ForwarderInfo(full, "", None, [])
        else:
            info.last_seen = time.monotonic()

    def expire(self, now: float, timeout: float) -> None:
        for path, info in list(self.forwarders.items()):
            if now - info.last_seen > timeout:
                del self.forwarders[path]

    def remember(self, ident: bytes, path: tuple[bytes, ...]) -> None:
        if path:
            self.via[ident] = path
        else:
            self.via.pop(ident, None)

    def forget(self, *idents: bytes | None) -> None:
        for ident in idents:
            if ident is not None:
                self.via.pop(ident, None)

    def send(self, ident: bytes, frames: list[Any], path: tuple[bytes, ...] | None = None) -> bool:
        """Send to one engine, through its forwarders if it has any; False if the first hop is gone."""
        hops = self.via.get(ident, ()) if path is None else path
        return self._send([*hops, ident, *frames])

    def _send(self, frames: list[Any]) -> bool:
        """Zero-copy, on the hot path; False if the first hop (engine or forwarder) is gone."""
        try:
            wire.send_frames(self.sock, frames)
            return True
        except zmq.ZMQError as e:
            if e.errno == zmq.EHOSTUNREACH:
                return False
            raise

    def to_forwarders(self, frames: list[Any]) -> None:
        """A message for every known forwarder itself (the controller is stopping).

        Deepest first: a forwarder stops on its own copy, so the copies it must relay
        to the forwarders below it go ahead of it on the same pipe."""
        for path in sorted(self.forwarders, key=len, reverse=True):
            try:
                self._send([*path, relay.SELF, *frames])
            except zmq.ZMQError:
                pass

    def broadcast(self, targets: list[tuple[bytes, str]], frames: list[Any], batch: bool) -> list[bytes]:
        """Send ``frames`` to every (engine identity, msg_id): once per directly connected engine,
        once per top-level forwarder for the engines behind it. Returns the identities not reached."""
        if len(targets) == 1:  # rc[i], the usual case: one send, whatever the path (as below)
            ident = targets[0][0]
            self.request_copies += 1
            return [] if self.send(ident, frames) else [ident]
        failed: list[bytes] = []
        groups: dict[bytes, list[tuple[tuple[bytes, ...], str, bytes]]] = {}
        for ident, mid in targets:
            hops = self.via.get(ident)
            if not hops:
                self.request_copies += 1
                if not self.send(ident, frames, ()):
                    failed.append(ident)
            else:
                groups.setdefault(hops[0], []).append(((*hops[1:], ident), mid, ident))
        for top, group in groups.items():
            self.request_copies += 1
            if len(group) == 1:
                ok = self.send(group[0][2], frames)
            else:
                self.fanouts += 1
                spec = relay.fanout_spec([(p, m) for p, m, _ in group], batch)
                ok = self._send([top, relay.FANOUT, spec, *frames])
            if not ok:
                failed.extend(ident for _, _, ident in group)
        return failed

    def describe(self, engine_idents: list[bytes]) -> dict[str, Any]:
        """For ``engines_request``: the forwarders, how many engines each serves (its subtree), the counters."""
        now = time.monotonic()
        paths = [self.via.get(i, ()) for i in engine_idents]
        return {
            "forwarders": [{"name": f.name, "pid": f.pid, "urls": f.urls, "depth": len(f.path),
                            "engines": sum(1 for p in paths if p[:len(f.path)] == f.path),
                            "last_seen_age": round(now - f.last_seen, 3)}
                           for f in self.forwarders.values()],
            "request_copies": self.request_copies,
            "fanouts": self.fanouts,
            "batched_replies": self.batched_replies,
        }
