"""The wire format: signed multipart ZeroMQ messages.

A message is ``[signature, header, meta, payload, *buffers]`` after any
routing frames. ``header`` and ``meta`` are JSON, ``payload`` is a pickle.
The signature is HMAC-SHA256 over header, meta and payload with the
cluster's key. ``buffers`` are raw out-of-band data (numpy arrays) that the
signed pickle refers to, sent zero-copy. With transport "hmac" the header
lists their SHA-256 digests (``bufs``), so the signature covers them, their
count and order too: a man in the middle cannot change array data unnoticed.
With transport "curve" CurveZMQ authenticates every frame already and the
digests are left out (both ends of a socket share the mode: the handshake
fails otherwise). docs/architecture.md, "Security", has the measured cost.

The controller only reads ``header`` to route a message; it never unpickles.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import zmq

PROTOCOL_VERSION = 1
MIN_FRAMES = 4
EMPTY_META = b"{}"
# Unsigned notice [REFUSED, msg_id, reason]: a request that did not verify, named by the msg_id in
# its (untrusted) header, so its sender fails that one task at once instead of waiting for ever.
# Controller to client (controller/clients.py) and engine to controller (engine/refusal.py).
REFUSED = b"hpcpar-refused"
# Unsigned notice [FAILED, msg_id, reason]: the controller failed handling a client's request (an
# hpcpar bug, in its log): the client fails that request at once with the reason, never a time-out.
FAILED = b"hpcpar-failed"

# Built once: json.dumps() with non-default arguments builds an encoder per call,
# and every message on the request path is packed and unpacked several times.
_encode = json.JSONEncoder(separators=(",", ":")).encode
_encode_meta = json.JSONEncoder(separators=(",", ":"), default=str).encode
_decode = json.JSONDecoder().decode


class BadMessage(ValueError):
    """A message that is malformed or whose signature does not verify."""


class BadBuffers(BadMessage):
    """A message whose signed part verifies but whose buffer frames do not match it.

    ``message`` is the (authentic) message: a receiver can answer its sender
    with an error naming the request, instead of dropping it silently."""

    def __init__(self, problem: str, message: Message) -> None:
        super().__init__(problem)
        self.message = message


# Header value of "bufs" for a message whose buffer frames are whole signed messages
# (a coalesced reply): the receiver verifies each of them on its own.
NESTED = "nested"


def buffer_digests(buffers: Any) -> list[str]:
    """SHA-256 of each buffer frame, hex (SHA-NI makes it the fastest in hashlib here)."""
    return [hashlib.sha256(_view(b)).hexdigest() for b in buffers]


def buffers_problem(header: dict[str, Any], buffers: list[Any], required: bool) -> str | None:
    """Why ``buffers`` do not match the digests ``header`` lists (None if they do).

    ``required``: buffer frames must be signed (transport "hmac")."""
    digests = header.get("bufs")
    if digests is None:
        if not buffers or not required:
            return None
        return (f"its {len(buffers)} buffer frame(s) are not covered by the signature: the sender runs "
                "an hpcpar without signed buffers (upgrade it to this version), or a connection file "
                "for transport 'curve' against this 'hmac' cluster (use the current connection file)")
    if digests == NESTED:
        return None
    if not isinstance(digests, list) or len(digests) != len(buffers):
        n = len(digests) if isinstance(digests, list) else "no valid list of"
        return (f"it arrived with {len(buffers)} buffer frame(s) but was signed with {n}: "
                "frames were added or dropped in transit")
    for i, (digest, got, buf) in enumerate(zip(digests, buffer_digests(buffers), buffers)):
        if got != digest:
            return (f"its buffer frame {i} ({memoryview(buf).nbytes} bytes) was altered in transit "
                    "(its SHA-256 does not match the signed header)")
    return None


def new_id() -> str:
    """32 random hex digits, like ``uuid4().hex`` (nothing reads the version bits) at a fifth of its cost."""
    return os.urandom(16).hex()


def now() -> float:
    return time.time()


def failure_meta(ename: str, evalue: str, traceback_line: str | None = None) -> dict[str, Any]:
    """The meta of an error reply made by hpcpar itself (not raised by user code)."""
    return {"status": "error", "origin": "hpcpar", "ename": ename, "evalue": evalue,
            "traceback": [traceback_line or f"{ename}: {evalue}"]}


# Most frames on the request path are bytes already (wire.drain copies small ones):
# the type test spares them hasattr's failed look-up.
def _bytes(frame: Any) -> bytes:
    if type(frame) is bytes:
        return frame
    return frame.bytes if hasattr(frame, "bytes") else bytes(frame)


def _view(frame: Any) -> Any:
    if type(frame) is bytes:
        return frame
    return frame.buffer if hasattr(frame, "buffer") else frame


@dataclass
class Message:
    header: dict[str, Any]
    meta_frame: Any  # JSON, parsed on first use: the controller forwards most messages unread
    payload: Any  # bytes-like, not yet unpickled
    buffers: list[Any] = field(default_factory=list)
    frames: list[Any] = field(default_factory=list)  # the signed frames, for forwarding as-is
    _meta: dict[str, Any] | None = None

    @property
    def meta(self) -> dict[str, Any]:
        if self._meta is None:
            try:
                meta = _decode(_bytes(self.meta_frame).decode())
            except (ValueError, UnicodeDecodeError) as e:
                raise BadMessage(f"undecodable meta: {e}") from None
            if not isinstance(meta, dict):
                raise BadMessage("meta must be a JSON object")
            self._meta = meta
        return self._meta

    @property
    def msg_type(self) -> str:
        return self.header.get("msg_type", "")

    @property
    def msg_id(self) -> str:
        return self.header.get("msg_id", "")


_SHA256_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class Signer:
    """Packs and verifies messages with one cluster key."""

    def __init__(self, key: bytes, transport: str = "hmac") -> None:
        if not key:
            raise ValueError("an empty key would disable authentication; refusing")
        self.key = key
        # Curve authenticates every frame itself: buffer digests would only cost time there.
        self.sign_buffers = transport != "curve"
        self.session = new_id()
        # Numbers this sender's messages (header "seq"): receivers drop a replay (security.ReplayGuard).
        self._seq = itertools.count(1).__next__
        # HMAC-SHA256 (RFC 2104) from its two keyed SHA-256 states, each copied per
        # message: the same digest as hmac.new(key, msg, sha256), without the hmac
        # module's Python wrapper calls (1.7 against 2.9 us per signature; six per apply).
        block = (hashlib.sha256(key).digest() if len(key) > _SHA256_BLOCK else key).ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(block.translate(_IPAD))
        self._outer = hashlib.sha256(block.translate(_OPAD))

    def signature(self, header: Any, meta: Any, payload: Any) -> bytes:
        inner = self._inner.copy()
        inner.update(header)
        inner.update(meta)
        inner.update(payload)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def header(self, msg_type: str, **fields: Any) -> dict[str, Any]:
        hdr = {
            "msg_id": new_id(),
            "msg_type": msg_type,
            "session": self.session,
            "date": now(),
            "version": PROTOCOL_VERSION,
            "seq": self._seq(),
        }
        hdr.update(fields)
        return hdr

    def pack(
        self,
        header: dict[str, Any],
        meta: dict[str, Any] | None = None,
        payload: bytes = b"",
        buffers: list[Any] | tuple = (),
        nested: bool = False,
    ) -> list[Any]:
        """``nested``: each buffer frame belongs to a whole signed message the receiver
        verifies on its own (no digests needed)."""
        if buffers and self.sign_buffers and "bufs" not in header:
            # A header that lists digests already is a stored request run again (resubmit):
            # its original sender's digests stay, so the engine checks the data end to end.
            header = {**header, "bufs": NESTED if nested else buffer_digests(buffers)}
        h = _encode(header).encode()
        m = _encode_meta(meta).encode() if meta else EMPTY_META
        return [self.signature(h, m, payload), h, m, payload, *buffers]

    def unpack(self, frames: list[Any], check_buffers: bool = True) -> Message:
        """Verify and parse ``frames`` (routing frames already removed).

        ``check_buffers=False``: for a hop that forwards buffers unread (controller,
        forwarder); the process that reads them verifies them, end to end."""
        if len(frames) < MIN_FRAMES:
            raise BadMessage(f"expected at least {MIN_FRAMES} frames, got {len(frames)}")
        h, m, p = _view(frames[1]), _view(frames[2]), _view(frames[3])
        if not hmac.compare_digest(_bytes(frames[0]), self.signature(h, m, p)):
            raise BadMessage("bad signature (wrong cluster key?)")
        try:
            header = _decode(_bytes(frames[1]).decode())
        except (ValueError, UnicodeDecodeError) as e:
            raise BadMessage(f"undecodable header: {e}") from None
        if not isinstance(header, dict):
            raise BadMessage("header must be a JSON object")
        if not isinstance(header.get("msg_type"), str):
            raise BadMessage("header has no msg_type")
        buffers = [_view(f) for f in frames[4:]] if len(frames) > MIN_FRAMES else []
        msg = Message(header, frames[2], p, buffers, list(frames))
        if check_buffers and (buffers or "bufs" in header):
            problem = buffers_problem(header, buffers, self.sign_buffers)
            if problem is not None:
                raise BadBuffers(f"{msg.msg_type or 'message'} {msg.msg_id}: {problem}", msg)
        return msg


# The hot path talks to pyzmq's compiled socket methods with plain int flags: the
# pure-Python wrappers (send_multipart, recv_multipart) build enum flags for every
# frame, which costs more than the send or receive itself for small messages.
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
# get() turns its option into a SocketOption enum on every call; given the member itself,
# that is a fast path (2.6 us against 3.4 us for the int; a NOBLOCK recv raising zmq.Again: 7.9 us).
_EVENTS = zmq.SocketOption.EVENTS
_POLLIN = int(zmq.POLLIN)
# pyzmq copies frames below this size even with copy=False, after building a memoryview to
# measure them; asking for the copy directly halves the cost of sending a small message.
_COPY_BELOW = zmq.COPY_THRESHOLD
_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv
_get = zmq.backend.Socket.get


def send_frames(sock: Any, frames: list[Any], flags: int = 0) -> None:
    """``sock.send_multipart(frames, flags, copy=False)``, cheaper."""
    last = len(frames) - 1
    more = _SNDMORE | flags
    for i, frame in enumerate(frames):
        small = type(frame) is bytes and len(frame) < _COPY_BELOW
        _send(sock, frame, more if i < last else flags, copy=small)


def recv_frames(sock: Any, flags: int = 0) -> list[Any]:
    """``sock.recv_multipart(flags, copy=False)``, cheaper."""
    parts = [_recv(sock, flags, copy=False)]
    while parts[-1].more:
        parts.append(_recv(sock, flags, copy=False))
    return parts


def drain(sock: Any, limit: int | None = None, copy_below: int = 0) -> Iterator[list[Any]]:
    """Every message waiting on ``sock`` (at most ``limit``), without blocking, zero-copy.

    Frames shorter than ``copy_below`` bytes come back as ``bytes``: a small
    zero-copy frame pins libzmq's whole receive buffer (8 KB or more) for as
    long as it lives, so a process that holds many small messages (a
    controller with thousands of queued tasks) copies them and lets go.
    """
    try:
        frames = recv_frames(sock, _NOBLOCK)
    except zmq.Again:
        return
    count = 1
    while True:
        if copy_below:
            frames = [f.bytes if len(f) < copy_below else f for f in frames]
        yield frames
        # Ask before each further read rather than read until zmq.Again: raising it costs more.
        if (limit is not None and count >= limit) or not _get(sock, _EVENTS) & _POLLIN:
            return
        frames = recv_frames(sock, _NOBLOCK)
        count += 1
