"""The client's connection to the controller: one socket, one I/O thread.

User threads hand frames to the I/O thread through an in-process pipe (zero
copy); the I/O thread owns the one DEALER socket to the controller's client
port and delivers everything that arrives to a callback.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any

import zmq

from ..wire import drain

log = logging.getLogger("hpcpar.client")

_CLOSE = b"hpcpar-close"
REJECTED = b"hpcpar-rejected"
_counter = itertools.count()


class Transport:
    def __init__(
        self,
        url: str,
        identity: bytes,
        on_frames: Callable[[list[Any]], None],
        on_error: Callable[[BaseException], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.ctx = zmq.Context()
        self.socket = self.ctx.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.IDENTITY, identity)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.socket.setsockopt(zmq.RCVHWM, 0)
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
        self.tx.connect(url)
        self._lock = threading.Lock()
        self._on_frames = on_frames
        self._on_error = on_error
        self._on_reconnect = on_reconnect
        # Watch the connection: after the controller comes back (a restart, a
        # network blip), the client asks for anything it may have missed.
        self._monitor = self.socket.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self._was_disconnected = False
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="hpcpar-client-io", daemon=True)
        self.thread.start()

    def send(self, frames: list[Any]) -> None:
        with self._lock:
            if self.closed:
                raise RuntimeError("this client is closed; create a new hpcpar.Client()")
            self.tx.send_multipart(frames, copy=False)

    def send_on_receiving_socket(self, frames: list[Any]) -> None:
        """Through the I/O thread, on the socket replies come to: the first
        message, so the controller knows that connection before it answers."""
        with self._lock:
            if self.closed:
                raise RuntimeError("this client is closed; create a new hpcpar.Client()")
            self._user_end.send_multipart(frames, copy=False)

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self._io_end, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        sock, pipe = self.socket, self._io_end
        try:
            while True:
                events = dict(poller.poll())
                if pipe in events:
                    for frames in drain(pipe):
                        if len(frames) == 1 and frames[0].bytes == _CLOSE:
                            return
                        sock.send_multipart(frames, copy=False)
                if self._monitor in events:
                    self._connection_event()
                if sock in events:
                    for frames in drain(sock):
                        try:
                            self._on_frames(frames)
                        except Exception as e:  # keep the I/O thread alive, whatever arrives
                            log.exception("error handling a message from the controller")
                            if self._on_error:
                                self._on_error(e)
        finally:
            sock.disable_monitor()
            self._monitor.close(linger=0)
            sock.close(linger=500)  # let sends queued just before close() go out
            pipe.close(linger=0)

    def _connection_event(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return
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
        self.ctx.term()
