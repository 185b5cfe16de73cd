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
        self._lock = threading.Lock()
        self._on_frames = on_frames
        self._on_error = on_error
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="hpcpar-client-io", daemon=True)
        self.thread.start()

    def send(self, frames: list[Any]) -> None:
        with self._lock:
            if self.closed:
                raise RuntimeError("this client is closed; create a new hpcpar.Client()")
            self._user_end.send_multipart(frames, copy=False)

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self._io_end, zmq.POLLIN)
        sock, pipe = self.socket, self._io_end
        try:
            while True:
                events = dict(poller.poll())
                if pipe in events:
                    while True:
                        try:
                            frames = pipe.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        if len(frames) == 1 and frames[0].bytes == _CLOSE:
                            return
                        sock.send_multipart(frames, copy=False)
                if sock in events:
                    while True:
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        try:
                            self._on_frames(frames)
                        except Exception as e:  # keep the I/O thread alive, whatever arrives
                            log.exception("error handling a message from the controller")
                            if self._on_error:
                                self._on_error(e)
        finally:
            sock.close(linger=500)  # let sends queued just before close() go out
            pipe.close(linger=0)

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                self._user_end.send(_CLOSE)
            except zmq.ZMQError:
                pass
        self.thread.join(timeout=5)
        self._user_end.close(linger=0)
        self.ctx.term()
