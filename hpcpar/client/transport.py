"""The client's connection to the controller: one socket, one I/O thread.

Requests leave from the caller's thread on a sending socket of their own.
Replies arrive on the receiving DEALER socket, which one thread at a time
owns (``_rx``): normally the I/O thread, which delivers everything that
arrives to a callback. A thread that blocks for a result takes the receiving
socket over for the length of its wait and delivers what arrives itself, so
its reply does not cost a second thread wake-up (I/O thread, then caller);
the I/O thread takes the socket back once no caller has wanted it for
``RESUME_AFTER`` seconds.
"""

from __future__ import annotations

import itertools
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from .. import security, wire
from ..wire import drain, send_frames

zmq_poll = zmq.zmq_poll

try:  # the C functions: signal.signal() and getsignal() wrap handlers in enums, 15 us per swap
    from _signal import getsignal as _getsignal
    from _signal import signal as _setsignal
except ImportError:  # pragma: no cover - not CPython
    from signal import getsignal as _getsignal
    from signal import signal as _setsignal
_SIGINT = int(signal.SIGINT)

log = logging.getLogger("hpcpar.client")

_CLOSE = b"hpcpar-close"
_PAUSE = b"hpcpar-pause"  # to the I/O thread: leave the receiving socket to a waiting caller
REJECTED = b"hpcpar-rejected"
REFUSED = wire.REFUSED  # [REFUSED, msg_id, reason]: one request did not verify (controller/clients.py)
FAILED = wire.FAILED  # [FAILED, msg_id, reason]: the controller failed handling one request (its bug)
_counter = itertools.count()
RESUME_AFTER = 0.01  # s without a receiving caller before the I/O thread takes the socket back
TICK = 0.01  # how often a paused I/O thread looks (only while callers are receiving)
LONG_WAIT = 0.2  # a caller waiting this long: the I/O thread blocks until it is done instead
SEND_TIMEOUT_MS = 10_000  # see Transport.send
RETRY_SEND_MS = 50  # how often the I/O thread retries a send the receiving socket could not take
IDLE_POLL_MS = 1000  # the I/O thread also looks at ``closed`` this often (a missed wake-up cannot hang close())
HANDOVER_WAIT = 0.05  # s a caller waits for the socket before waiting on the owner's deliveries


class Transport:
    def __init__(
        self,
        url: str,
        identity: bytes,
        on_frames: Callable[[list[Any]], None],
        on_error: Callable[[BaseException], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
        info: Any = None,
        on_rejected: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.ctx = zmq.Context()
        # ``info`` (the ConnectionInfo): curve keys, if the cluster uses CurveZMQ, and the frame limit.
        self.max_frame = getattr(info, "max_message_size", -1) or -1
        self.socket = self.ctx.socket(zmq.DEALER)
        security.connect_as(self.socket, info)
        self.socket.setsockopt(zmq.IDENTITY, identity)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.socket.setsockopt(zmq.RCVHWM, 0)
        # Watch the connection: after the controller comes back (a restart, a
        # network blip), the client asks for anything it may have missed; a refused
        # handshake (other keys) is reported at once. Attached before connect(): on
        # loopback a refusal is over before a monitor attached afterwards would see it.
        self._monitor = security.watch_handshake(self.socket)
        self.socket.connect(url)
        pipe_url = f"inproc://hpcpar-client-{next(_counter)}"
        self._io_end = self.ctx.socket(zmq.PAIR)
        self._io_end.bind(pipe_url)
        self._user_end = self.ctx.socket(zmq.PAIR)
        self._user_end.connect(pipe_url)
        # Requests leave from the caller's thread on a socket of their own (no
        # hand-off to the I/O thread); replies come back to ``identity``, the
        # receiving socket, which the controller reads from each header's session.
        self.tx = self.ctx.socket(zmq.DEALER)
        self.tx.setsockopt(zmq.IDENTITY, identity + b":tx")
        self.tx.setsockopt(zmq.LINGER, 500)
        self.tx.setsockopt(zmq.SNDHWM, 0)
        # A DEALER with no connection left (the controller refused our key at the handshake)
        # blocks a send for ever; with an unlimited queue nothing else ever makes it wait.
        self.tx.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
        security.connect_as(self.tx, info)
        self.tx.connect(url)
        self._lock = threading.Lock()
        # Who may use ``socket``, ``_io_end`` and ``_monitor`` now; see the module docstring.
        self._rx = threading.RLock()
        self._owner: int | None = None  # thread id of the socket's owner
        self._io_ident: int | None = None
        self._rx_holds = 0  # callers' receiving turns so far
        self._rx_released = 0.0  # monotonic time a caller last gave the socket back
        self._pause_asked = False
        self._close_seen = False
        self._on_frames = on_frames
        self._on_error = on_error
        self._on_reconnect = on_reconnect
        self._on_rejected = on_rejected
        self._handshake = security.HandshakeWatch(curve=getattr(info, "transport", "hmac") == "curve")
        self._was_disconnected = False
        self._unsent: deque[list[Any]] = deque()  # for the receiving socket, not taken yet
        self.closed = False
        self._poll_items = [(self.socket, zmq.POLLIN), (self._io_end, zmq.POLLIN), (self._monitor, zmq.POLLIN)]
        self._main_ident = threading.main_thread().ident
        self.thread = threading.Thread(target=self._loop, name="hpcpar-client-io", daemon=True)
        self.thread.start()

    def send(self, frames: list[Any]) -> None:
        if self.max_frame > 0 and len(frames) > 3:
            self._check_size(frames)
        with self._lock:
            if self.closed:
                raise RuntimeError("this client is closed; create a new hpcpar.Client()")
            try:
                send_frames(self.tx, frames)
            except zmq.Again:
                raise ConnectionError(
                    f"cannot send to the controller at {self.url}: no connection to it for "
                    f"{SEND_TIMEOUT_MS // 1000} s (it refused this client's key, or it is unreachable); "
                    "check 'hpcpar status' and create a new Client() with the current connection file") from None

    def _check_size(self, frames: list[Any]) -> None:
        for f in frames[3:]:
            if len(f) > self.max_frame:
                raise ValueError(
                    f"a message part of {len(f)} bytes exceeds this cluster's frame limit of {self.max_frame} "
                    "bytes, so the controller would drop the connection: send the data in smaller pieces, or "
                    "raise [security] max_message_size in the profile's config.toml and restart the cluster")

    def send_on_receiving_socket(self, frames: list[Any]) -> None:
        """Through the I/O thread, on the socket replies come to: the first
        message, so the controller knows that connection before it answers."""
        with self._lock:
            if self.closed:
                raise RuntimeError("this client is closed; create a new hpcpar.Client()")
            self._user_end.send_multipart(frames, copy=False)

    # -- receiving: whoever holds ``_rx`` --------------------------------------------------

    def _poll(self, timeout_ms: int = -1) -> dict[Any, int]:
        """What is ready on the receiving socket, the pipe from users and the monitor
        (pyzmq's zmq_poll itself: zmq.Poller.poll only adds a Python layer to it)."""
        if self._unsent:
            timeout_ms = RETRY_SEND_MS if timeout_ms < 0 else min(timeout_ms, RETRY_SEND_MS)
        return dict(zmq_poll(self._poll_items, timeout_ms))

    def _send_received_side(self, frames: list[Any]) -> None:
        """Never blocking: a send waiting for a connection the controller refused would stop
        this thread from reading the monitor that says so (and close() from ending it)."""
        if not self._unsent:
            try:
                send_frames(self.socket, frames, zmq.NOBLOCK)
                return
            except zmq.Again:
                pass
        self._unsent.append(frames)

    def _retry_unsent(self) -> None:
        while self._unsent:
            try:
                send_frames(self.socket, self._unsent[0], zmq.NOBLOCK)
            except zmq.Again:
                return
            self._unsent.popleft()

    def _service(self, events: dict[Any, int]) -> None:
        """Handle what ``poll`` reported: sends queued for the receiving socket,
        connection events, and arriving messages (delivered to the callback)."""
        if self._unsent:
            self._retry_unsent()
        if self._io_end in events:
            for frames in drain(self._io_end):
                if len(frames) == 1:
                    word = frames[0].bytes
                    if word == _CLOSE:
                        self._close_seen = True
                        return
                    if word == _PAUSE:
                        if threading.get_ident() == self._io_ident:
                            self._pause_asked = True
                        continue
                self._send_received_side(frames)
        if self._monitor in events:
            self._connection_event()
        if self.socket in events:
            previous: Any = None
            deferred: list[Any] = []
            if threading.get_ident() == self._main_ident:
                # A Ctrl-C in the middle of a delivery would lose that message: hold it until after.
                previous = _getsignal(_SIGINT)
                if callable(previous):
                    _setsignal(_SIGINT, lambda *a: deferred.append(a))
                else:
                    previous = None
            try:
                for frames in drain(self.socket):
                    try:
                        self._on_frames(frames)
                    except Exception as e:  # keep receiving, whatever arrives
                        log.exception("error handling a message from the controller")
                        if self._on_error:
                            self._on_error(e)
            finally:
                if previous is not None:
                    _setsignal(_SIGINT, previous)
                    if deferred:
                        previous(*deferred[0])

    def receive_until(self, done: Callable[[], bool], timeout: float | None = None) -> None:
        """Deliver arriving messages on the calling thread until ``done()`` or
        ``timeout``. Returns early, leaving the caller to wait for the owner's
        deliveries, if another caller holds the socket or the client closes."""
        me = threading.get_ident()
        if self.closed or (timeout is not None and timeout <= 0):
            return
        if not self._rx.acquire(blocking=False):
            if self._owner != self._io_ident or self.closed:
                return  # another caller receives for everyone
            with self._lock:
                if self.closed:
                    return
                self._user_end.send(_PAUSE)
            if not self._rx.acquire(timeout=HANDOVER_WAIT if timeout is None else min(timeout, HANDOVER_WAIT)):
                return
        if self._close_seen or self.closed:
            self._rx.release()
            return
        outer, self._owner = self._owner, me
        self._rx_holds += 1
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not done() and not self._close_seen:
                wait = -1 if deadline is None else int(max(0.0, deadline - time.monotonic()) * 1000) + 1
                self._service(self._poll(wait))
                if deadline is not None and time.monotonic() >= deadline:
                    return
        finally:
            self._owner = outer
            self._rx_released = time.monotonic()
            self._rx.release()

    def _loop(self) -> None:
        self._io_ident = threading.get_ident()
        self._rx.acquire()
        held = True
        try:
            while True:
                self._owner = self._io_ident
                while not self._close_seen and not self._pause_asked:
                    self._service(self._poll(IDLE_POLL_MS))
                    if self.closed:
                        self._close_seen = True
                if self._close_seen:
                    return
                self._pause_asked = False
                self._owner = None
                held = False
                self._rx.release()
                self._paused()
                self._rx.acquire()  # blocks while a caller is receiving
                held = True
                if self._close_seen:
                    return
        finally:
            if not held:
                self._rx.acquire()
            sock = self.socket
            sock.disable_monitor()
            self._monitor.close(linger=0)
            sock.close(linger=500)  # let sends queued just before close() go out
            self._io_end.close(linger=0)
            self._rx.release()

    def _paused(self) -> None:
        """While callers take turns receiving, look now and then whether they
        have stopped; during one long wait, just wait for its end."""
        seen, since = self._rx_holds, time.monotonic()
        while not self._close_seen and not self.closed:
            time.sleep(TICK)
            now = time.monotonic()
            if self._rx_holds != seen:
                seen, since = self._rx_holds, now
            if self._owner is None and now - self._rx_released >= RESUME_AFTER:
                return
            if self._owner is not None and now - since >= LONG_WAIT:
                return

    def _connection_event(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return
            refused = self._handshake.event(event)
            if refused is not None and self._on_rejected is not None:
                self._on_rejected(refused)
            if event == zmq.EVENT_DISCONNECTED:
                self._was_disconnected = True
            elif event == zmq.EVENT_CONNECTED and self._was_disconnected:
                self._was_disconnected = False
                if self._on_reconnect is not None:
                    # Not on this thread: the callback waits for answers this thread delivers.
                    threading.Thread(target=self._on_reconnect, name="hpcpar-resync", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                self._user_end.send(_CLOSE)
            except zmq.ZMQError:
                pass
            self.tx.close(linger=500)  # let requests sent just before close() go out
        self.thread.join(timeout=5)
        self._user_end.close(linger=0)
        if self.thread.is_alive():  # its sockets are still open: term() would wait for ever
            log.warning("the client's I/O thread did not stop within 5 s; leaving its sockets to the process exit")
            return
        self.ctx.term()
