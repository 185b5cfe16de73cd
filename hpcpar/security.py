"""Transport security, one module for controller, engines, clients and forwarders.

Two modes (``[security] transport``; docs/architecture.md, "Security"):

- ``hmac``: every message is signed with the cluster key (wire.py). Connections
  also log in with ZeroMQ's PLAIN mechanism, whose password is a token derived
  from the key (plain_token; never the key itself): the listening process's ZAP
  handler refuses a peer without it before it can deliver a single frame, so an
  unauthenticated peer cannot make the controller buffer anything. PLAIN sends
  the token in clear: someone who can read the traffic can connect (not sign);
  for them the frame limit (``max_message_size``) bounds what one frame costs.
- ``curve``: on top of that, every TCP connection is a CurveZMQ session
  (encrypted, authenticated). The controller holds the cluster's server key
  pair; clients and engines hold a key pair each, in their 0600 connection
  files. A ZAP handler in the listening process admits only those public keys,
  so a peer without them never completes the handshake and cannot deliver a
  single frame.

``auto`` (the default) is curve whenever a listening address is beyond
loopback, hmac otherwise.

Both modes drop replays: a signed message whose (session, seq) was seen, or
whose date is older than the replay window (ReplayGuard).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zmq
from zmq.utils import z85

log = logging.getLogger("hpcpar.security")

TRANSPORTS = ("auto", "curve", "hmac")
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
DEFAULT_REPLAY_WINDOW = 300.0  # seconds
DEFAULT_MAX_MESSAGE_SIZE = 2 << 30  # bytes per frame: a 2 GiB array per buffer; larger frames are refused
# Receive/send high-water marks of the controller's and forwarders' sockets, in messages per peer:
# a flood or a peer that stops reading stalls (TCP back-pressure) instead of growing the process.
RECEIVE_HWM = 256
SEND_HWM = 10_000


class TransportError(ValueError):
    """The transport setting cannot be honoured (bad value, or no CurveZMQ in this libzmq)."""


def curve_available() -> bool:
    return bool(zmq.has("curve"))


def is_loopback(ip: str) -> bool:
    if ip in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False  # "*", a host name or an interface name: beyond loopback


def resolve_transport(choice: str, *listen_ips: str | None) -> str:
    """The mode a controller uses: ``auto`` means curve unless it listens on loopback only."""
    if choice not in TRANSPORTS:
        raise TransportError(f"[security] transport must be one of {', '.join(TRANSPORTS)}, not {choice!r}")
    if choice == "auto":
        choice = "hmac" if all(is_loopback(ip or "") for ip in listen_ips) else "curve"
    if choice == "curve" and not curve_available():
        raise TransportError(
            "transport 'curve' needs a libzmq built with CurveZMQ (libsodium), which this pyzmq lacks; "
            "install the pyzmq wheel from PyPI, or set [security] transport = \"hmac\" "
            "(only on a network you trust)")
    return choice


@dataclass
class CurveKeys:
    """The cluster's Curve keys (Z85 text): the server pair and one pair for clients, one for engines."""

    server_public: str
    server_secret: str
    client_public: str
    client_secret: str
    engine_public: str
    engine_secret: str

    @classmethod
    def generate(cls) -> CurveKeys:
        pairs = [zmq.curve_keypair() for _ in range(3)]
        return cls(*(k.decode("ascii") for pair in pairs for k in pair))

    def for_role(self, role: str) -> dict[str, str]:
        """What a connection file of ``role`` carries: the server's public key and the role's own pair."""
        public, secret = (self.client_public, self.client_secret) if role == "client" else \
            (self.engine_public, self.engine_secret)
        return {"curve_server_key": self.server_public, "curve_public_key": public, "curve_secret_key": secret}


def save_keys(path: Path, keys: CurveKeys, pid: int) -> None:
    """The controller's keys, 0600 from the start (written before any peer can connect)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({**asdict(keys), "controller_pid": pid}, f)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_keys(path: Path) -> CurveKeys:
    data = json.loads(path.read_text())
    return CurveKeys(**{k: data[k] for k in CurveKeys.__dataclass_fields__})


def remove_keys(path: Path, pid: int) -> None:
    """Remove the key file if this process wrote it (a clean stop; a crash leaves it for --restore)."""
    try:
        if json.loads(path.read_text()).get("controller_pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


# -- sockets ---------------------------------------------------------------------------------


def serve(sock: zmq.Socket, server_secret: str, domain: str) -> None:
    """Make a listening socket a Curve server (before bind); ZAP domain ``domain`` decides who gets in."""
    sock.curve_server = True
    sock.curve_secretkey = server_secret.encode("ascii")
    sock.zap_domain = domain.encode()


PLAIN_USER = b"hpcpar"


def plain_token(key: str | bytes) -> bytes:
    """The PLAIN password of an hmac-mode cluster: derived from its key, so the key never crosses the wire."""
    raw = key.encode("ascii") if isinstance(key, str) else bytes(key)
    return hmac.new(raw, b"hpcpar zmq PLAIN login v1", hashlib.sha256).hexdigest().encode("ascii")


def serve_plain(sock: zmq.Socket, domain: str) -> None:
    """Make a listening socket of an hmac-mode cluster a PLAIN server (before bind): the ZAP
    handler admits only peers that present the cluster's token (plain_token)."""
    sock.plain_server = True
    sock.zap_domain = domain.encode()


def _field(info: Any, name: str, default: Any = None) -> Any:
    return info.get(name, default) if isinstance(info, dict) else getattr(info, name, default)


def connect_as(sock: zmq.Socket, info: Any) -> None:
    """Set a connecting socket up for ``info``'s transport (before connect): Curve keys, or the
    PLAIN login of hmac mode (``info``: a ConnectionInfo or the connection file's dict)."""
    if _field(info, "transport", "hmac") != "curve":
        key = _field(info, "key")
        if key:
            sock.plain_username = PLAIN_USER
            sock.plain_password = plain_token(key)
        return
    sock.curve_serverkey = _field(info, "curve_server_key").encode("ascii")
    sock.curve_publickey = _field(info, "curve_public_key").encode("ascii")
    sock.curve_secretkey = _field(info, "curve_secret_key").encode("ascii")


def bound(sock: zmq.Socket, receive_hwm: int = RECEIVE_HWM, send_hwm: int = SEND_HWM,
          max_message_size: int = -1) -> None:
    """Bounded memory towards every peer of a listening socket (see RECEIVE_HWM)."""
    sock.setsockopt(zmq.RCVHWM, receive_hwm)
    sock.setsockopt(zmq.SNDHWM, send_hwm)
    if max_message_size > 0:
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_size)


# -- ZAP: who completes a Curve handshake ----------------------------------------------------


class Authenticator:
    """A ZAP handler thread for one zmq.Context: admits a Curve peer only if its public key is
    allowed in the socket's domain, a PLAIN peer (hmac mode) only if it presents ``plain``
    (plain_token of the cluster key). Denials are logged once per address."""

    def __init__(self, ctx: zmq.Context, allowed: dict[str, set[str]], plain: bytes | None = None) -> None:
        self.allowed = {domain.encode(): {z85.decode(k.encode("ascii")) for k in keys}
                        for domain, keys in allowed.items()}
        self.plain = plain
        self.denied = 0
        self._warned: set[bytes] = set()
        self._sock = ctx.socket(zmq.REP)
        self._sock.linger = 0
        self._sock.bind(ZAP_ENDPOINT)  # before any Curve socket binds: none is served without us
        self._stop = ctx.socket(zmq.PAIR)
        self._stop_url = f"inproc://hpcpar-zap-stop-{id(self)}"
        self._stop.bind(self._stop_url)
        self._ctx = ctx
        self._thread = threading.Thread(target=self._run, name="hpcpar-zap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stop = self._ctx.socket(zmq.PAIR)
        stop.connect(self._stop_url)
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(stop, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll())
                if stop in events:
                    return
                if self._sock in events:
                    self._sock.send_multipart(self._answer(self._sock.recv_multipart()))
        finally:
            stop.close(linger=0)
            self._sock.close(linger=0)

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        # ZAP request: version, request id, domain, address, identity, mechanism, credentials...
        if len(frames) < 6:
            return [b"1.0", frames[1] if len(frames) > 1 else b"", b"500", b"malformed ZAP request", b"", b""]
        version, request_id, domain, address, _identity, mechanism = frames[:6]
        if mechanism == b"PLAIN":
            ok = (self.plain is not None and len(frames) > 7 and frames[6] == PLAIN_USER
                  and hmac.compare_digest(frames[7], self.plain))
        else:
            ok = mechanism == b"CURVE" and len(frames) > 6 and frames[6] in self.allowed.get(domain, ())
        if ok:
            return [version, request_id, b"200", b"OK", b"", b""]
        self.denied += 1
        if address not in self._warned and len(self._warned) < 10_000:
            self._warned.add(address)
            log.warning("refused a %s connection from %s: not one of this cluster's keys (%s)",
                        domain.decode(errors="replace"), address.decode(errors="replace"),
                        mechanism.decode(errors="replace"))
        return [version, request_id, b"400", b"not one of this cluster's keys", b"", b""]

    def close(self) -> None:
        if self._thread.is_alive():
            self._stop.send(b"")
            self._thread.join(timeout=5)
        self._stop.close(linger=0)


# -- handshake failures seen by a connecting socket --------------------------------------------

HANDSHAKE_EVENTS = (zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
                    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


# Handshakes that fail without a verdict (the peer hung up, or had no ZAP handler yet: a
# controller starting, stopping or killed mid-handshake) mean "refused" only when they go on:
ABORTS_TO_REFUSE = 3  # in a row, with no handshake completing in between,
ABORTS_PERSIST = 2.0  # over at least this many seconds.


@dataclass
class HandshakeWatch:
    """Reads a connecting socket's monitor events and says when the controller refused us:
    ZAP said no, the mechanisms differ on a first connection, or handshakes keep failing
    without a verdict (in curve mode: our copy of the server key is not the server's).
    One failure without a verdict is not a refusal: a controller being restarted or
    restored produces those, and the client must ride through them."""

    curve: bool
    aborted: int = 0  # handshakes failed without a verdict, in a row
    handshaken: bool = False  # the current connection completed its handshake
    ever_handshaken: bool = False  # some connection of this socket did
    _connected_at: float | None = field(default=None, repr=False)
    _first_abort: float | None = field(default=None, repr=False)

    def event(self, event: int) -> str | None:
        """The reason to report for ``event``, or None."""
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.aborted = 0
            self._first_abort = None
            self.handshaken = self.ever_handshaken = True
            return None
        if event == zmq.EVENT_CONNECTED:
            self._connected_at = time.monotonic()
            self.handshaken = False
            return None
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return ("the controller refused this connection file's CurveZMQ key" if self.curve
                    else "the controller refused this connection file's key (its login token)")
        mismatch = ("the CurveZMQ handshake failed (the controller uses another transport mode or other keys)"
                    if self.curve else "the controller requires CurveZMQ (or is an older hpcpar), "
                    "which this connection file does not match")
        if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and not self.ever_handshaken:
            return mismatch
        if event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
            self._connected_at = None
            return mismatch if self._aborted() else None
        if event == zmq.EVENT_DISCONNECTED and self._connected_at is not None and not self.handshaken:
            self._connected_at = None
            if self._aborted() and self.curve:
                return "the controller closed the connection during the CurveZMQ handshake (other keys)"
        return None

    def _aborted(self) -> bool:
        """Count a handshake that failed without a verdict; True once they have gone on."""
        now = time.monotonic()
        if self._first_abort is None:
            self._first_abort = now
        self.aborted += 1
        return self.aborted >= ABORTS_TO_REFUSE and now - self._first_abort >= ABORTS_PERSIST


def watch_handshake(sock: zmq.Socket) -> zmq.Socket:
    """The monitor ``poll_or_refused`` reads: attach it BEFORE ``sock.connect()``, since on
    loopback a refused handshake is over before a monitor attached afterwards sees it."""
    return sock.get_monitor_socket(HANDSHAKE_EVENTS)


def poll_or_refused(sock: zmq.Socket, monitor: zmq.Socket, curve: bool, timeout_ms: int) -> str | None:
    """Wait up to ``timeout_ms`` for ``sock`` to be readable; return the reason at once if the
    peer refuses the handshake (None: readable, or the time is up). Closes ``monitor``
    (from ``watch_handshake``)."""
    from zmq.utils.monitor import recv_monitor_message

    watch = HandshakeWatch(curve=curve)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    deadline = time.monotonic() + timeout_ms / 1000
    try:
        while (left := deadline - time.monotonic()) > 0:
            events = dict(poller.poll(int(left * 1000) + 1))
            if sock in events:
                return None
            if monitor in events:
                while True:
                    try:
                        reason = watch.event(recv_monitor_message(monitor, zmq.NOBLOCK)["event"])
                    except zmq.Again:
                        break
                    if reason is not None:
                        return reason
        return None
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)


def rejection_message(url: str, reason: str, source: str) -> str:
    return (f"the controller at {url} rejected this connection ({reason}). The key in {source} does not "
            "match the running cluster: it was probably restarted; use its current connection file "
            "(create a new Client())")


# -- replays ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Seen:
    top: int  # highest seq accepted
    bits: int  # bit i set: seq top - i accepted
    last: float  # monotonic time of the last accepted message


class ReplayGuard:
    """Drops a signed message seen before or older than ``window`` seconds.

    Every sender numbers its messages (header ``seq``, per ``session``); per session the guard
    keeps the highest number and a bitmap of the WIDTH before it, so its memory is constant per
    live sender (messages may arrive a little out of order: several sockets and threads). A
    session idle for longer than the window is forgotten: anything it signed is then older
    than the window, and dropped by its date.
    """

    WIDTH = 4096

    def __init__(self, window: float = DEFAULT_REPLAY_WINDOW) -> None:
        self.window = window
        self.sessions: dict[str, _Seen] = {}
        self.dropped = 0
        self._warned: set[str] = set()
        self._next_prune = time.monotonic() + window

    def fresh(self, header: dict[str, Any]) -> bool:
        """True if this message is new; False (logged once per sender) if it is a replay or stale."""
        session = header.get("session")
        seq = header.get("seq")
        date = header.get("date")
        if type(seq) is not int or type(session) is not str or not isinstance(date, (int, float)):
            return self._drop(str(session), "no sequence number or date")
        now = time.monotonic()
        age = time.time() - date
        if age > self.window:
            return self._drop(session, f"{age:.0f} s old, beyond the {self.window:g} s replay window "
                                       "(a replay, or this host's clock is far behind)")
        seen = self.sessions.get(session)
        if seen is None:
            self.sessions[session] = _Seen(seq, 1, now)
            if now > self._next_prune:
                self.prune(now)
            return True
        shift = seq - seen.top
        if shift > 0:
            seen.bits = ((seen.bits << shift) | 1) & ((1 << self.WIDTH) - 1) if shift < self.WIDTH else 1
            seen.top = seq
        elif shift <= -self.WIDTH or (seen.bits >> -shift) & 1:
            return self._drop(session, "seen before")
        else:
            seen.bits |= 1 << -shift
        seen.last = now
        return True

    def _drop(self, session: str, why: str) -> bool:
        self.dropped += 1
        if session not in self._warned and len(self._warned) < 10_000:
            self._warned.add(session)
            log.warning("dropped a replayed or stale message from session %s: %s (logged once per sender)",
                        session[:12], why)
        return False

    def prune(self, now: float) -> None:
        """Forget senders idle for longer than the window (also called by the controller's timer)."""
        self.sessions = {s: v for s, v in self.sessions.items() if now - v.last <= self.window}
        self._warned.clear()
        self._next_prune = now + self.window
