"""The client's connection: finding the controller, requests it answers itself, and
everything the I/O thread receives (engine lists, live output, task replies).

A mixin of Client. All traffic goes through one socket to the controller's
client port (see transport.py), so a single forwarded port is enough to work
from a laptop.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from pathlib import Path
from typing import Any

from .. import datapub, security, targetset, wire
from ..connection import ConnectionFileError, ConnectionInfo
from ..error import HpcparError, remote_error
from ..paths import ProfileDir
from .transport import FAILED, REFUSED, REJECTED, Transport

log = logging.getLogger("hpcpar.client")


class ConnectionRejected(HpcparError):
    """The controller refused this client's messages (wrong key)."""


class Channel:
    """Client methods that talk to the controller and take in what it sends."""

    # -- connecting --------------------------------------------------------------------

    @staticmethod
    def _resolve(connection_info, url_file, profile, profile_dir, cluster_id, timeout) -> tuple[ConnectionInfo, str]:
        if isinstance(connection_info, dict):
            return ConnectionInfo.from_dict(connection_info, "connection_info dict"), "connection_info dict"
        path = connection_info or url_file
        if path is not None:
            text = str(path)
            if text.startswith("tcp://"):
                raise ConnectionFileError(
                    f"{text!r} is a URL; pass the path of the cluster's client connection file "
                    "(<profile>/security/hpcpar-client.json), which also holds the key"
                )
            p = Path(text).expanduser()
        else:
            pd = ProfileDir(Path(profile_dir)) if profile_dir else ProfileDir.for_profile(profile)
            p = pd.client_file(cluster_id or "")
            if cluster_id is None and not p.exists():
                others = sorted(pd.security.glob("hpcpar-*-client.json")) if pd.security.is_dir() else []
                if len(others) == 1:
                    p = others[0]
        deadline = time.monotonic() + max(0.0, timeout)
        while not p.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return ConnectionInfo.load(p), str(p)

    def _connect(self, timeout: float) -> None:
        self._check_controller_alive()
        urls = self._info.urls
        per_url = timeout if len(urls) == 1 else max(1.0, timeout / len(urls))
        last_error: BaseException | None = None
        for url in urls:
            self._transport = Transport(url, self.session.encode(), self._on_frames, on_reconnect=self._resync,
                                        info=self._info, on_rejected=self._on_rejected)
            try:
                self._request("connect_request", {}, timeout=per_url, first=True)
            except (TimeoutError, ConnectionRejected) as e:
                last_error = e
                self._transport.close()
                self._transport = None
                if isinstance(e, ConnectionRejected):
                    raise
                continue
            self._auto_activate()  # the engine list was taken from the reply as it arrived
            return
        raise TimeoutError(
            f"no controller answered at {', '.join(urls)} within {timeout:.0f} s "
            f"(connection file {self._source}); is the cluster running? Check with 'hpcpar list'"
        ) from last_error

    def _check_controller_alive(self) -> None:
        """A controller of this host that is gone (killed, crashed): say so now, and how to
        restore it, instead of waiting out the timeout."""
        import os
        import socket

        from ..launchers.process import process_start_time

        info = self._info
        if (not info.controller_pid or info.location != socket.gethostname() or not os.path.isdir("/proc/self")
                or process_start_time(info.controller_pid) is not None):
            return
        hand = _hand_started_gone(str(self._source), info.cluster_id)
        if hand:
            raise TimeoutError(hand)
        profile = f" --profile {info.profile}" if info.profile else ""
        cid = f" --cluster-id {info.cluster_id}" if info.cluster_id else ""
        raise TimeoutError(
            f"the controller of {self._source} (pid {info.controller_pid} on this host) is not running: "
            f"bring it back to its engines with 'hpcpar start{profile}{cid} --restore', or start afresh "
            f"with 'hpcpar start{profile}{cid} --force'")

    def _request(self, msg_type: str, meta: dict[str, Any], timeout: float | None = None,
                 first: bool = False) -> wire.Message:
        """A request answered by the controller itself (``first``: sent on the
        receiving socket, so the controller has seen it before it answers)."""
        header = self._signer.header(msg_type, route="controller")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._requests[header["msg_id"]] = fut
        frames = self._signer.pack(header, meta)
        if first:
            if self._transport is None or self._closed:
                raise RuntimeError("this client is closed; create a new hpcpar.Client()")
            if self._rejected:
                raise ConnectionRejected(self._rejected)
            self._transport.send_on_receiving_socket(frames)
        else:
            self._send(frames)
        wait = timeout if timeout is not None else self.timeout
        start = time.monotonic()
        self._receive_until(fut.done, wait)
        try:
            return fut.result(None if wait is None else max(0.0, wait - (time.monotonic() - start)))
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"the controller did not answer {msg_type} in time") from None
        finally:
            with self._lock:
                self._requests.pop(header["msg_id"], None)

    def _receive_until(self, done: Any, timeout: float | None) -> None:
        """Wait by receiving on this thread when it can (see transport.py): the
        reply then needs no hand-off from the I/O thread."""
        transport = self._transport
        if transport is not None and not done():
            transport.receive_until(done, timeout)

    def _send(self, frames: list[Any]) -> None:
        if self._transport is None or self._closed:
            raise RuntimeError("this client is closed; create a new hpcpar.Client()")
        if self._rejected:
            raise ConnectionRejected(self._rejected)
        self._transport.send(frames)

    # -- the I/O thread's side -------------------------------------------------------------

    def _refused_data(self, e: wire.BadBuffers) -> wire.Message:
        """A reply whose buffer frames changed on the way, as the error its request gets
        (its header is authentic, so the task it answers is known)."""
        header = {k: v for k, v in e.message.header.items() if k not in ("shm", "bufs")}
        header["status"] = "error"
        if header.get("parent") in self._requests:  # a request to the controller: its callers test this
            header["msg_type"] = "error_reply"
        meta = wire.failure_meta("MessageIntegrityError", f"a reply was refused: {e}; something between the "
                                 "engines and this client changes data (use [security] transport = "
                                 "\"curve\" on an untrusted network)")
        try:
            meta["engine_info"] = e.message.meta.get("engine_info")  # meta is covered by the signature
        except wire.BadMessage:
            pass
        return wire.Message(header, wire.EMPTY_META, b"", [], [], _meta=meta)

    def _on_frames(self, frames: list[Any]) -> None:
        if len(frames) == 2 and frames[0].bytes == REJECTED:
            self._on_rejected(frames[1].bytes.decode(errors="replace"))
            return
        if len(frames) == 3 and frames[0].bytes in (REFUSED, FAILED):
            msg_id, reason = (f.bytes.decode(errors="replace") for f in frames[1:])
            if frames[0].bytes == REFUSED:
                self._on_refused(msg_id, reason)
            else:
                self._on_controller_failed(msg_id, reason)
            return
        try:
            msg = self._signer.unpack(frames)
        except wire.BadBuffers as e:
            log.warning("refused a reply whose data does not verify: %s", e)
            msg = self._refused_data(e)
        except wire.BadMessage as e:
            log.warning("dropped a message from the controller: %s", e)
            return
        mt = msg.msg_type
        if mt == "coalesced_reply":
            # One message carrying every engine's reply to a broadcast; each inner
            # reply keeps its engine's signature and is verified on its own.
            start = 0
            for count in msg.header.get("counts", []):
                self._on_frames(msg.buffers[start : start + count])
                start += count
            return
        parent = msg.header.get("parent")
        if parent is not None:
            fut = self._requests.get(parent)
            if fut is not None:
                if mt == "connect_reply":
                    # Here, in arrival order: an engine_registered right behind the reply
                    # must not be undone by the waiting thread applying an older list.
                    self._set_engines(msg.meta.get("engines", []))
                    self._pool_notice = str((msg.meta.get("pool") or {}).get("stopped") or "")
                fut.set_result(msg)
                return
            if mt.endswith("_reply"):
                for msg_id in self._parts_refused(parent) if mt == "error_reply" else [parent]:
                    self._on_task_reply(msg_id, msg)
                return
        if mt == "stream":
            self._on_stream(msg)
        elif mt == "display_data":
            self._on_display(msg)
        elif mt == "engine_registered":
            eng = msg.meta["engine"]
            with self._cond:
                self._engines[int(eng["id"])] = eng
                self._mpi_engines += bool(eng.get("mpi_world"))
                self._cond.notify_all()
        elif mt == "pool_state":  # the elastic pool stopped submitting (or started again)
            with self._cond:
                self._pool_notice = str(msg.meta.get("stopped") or "")
                self._cond.notify_all()
        elif mt == "undelivered_notice":
            # We stopped reading for a while and the controller could not send these
            # replies: fetch them from the task database (not on this thread: it waits).
            ids = [m for m in msg.meta.get("msg_ids", []) if m in self.outstanding]
            if ids:
                threading.Thread(target=self._fetch_quietly, args=(ids,), name="hpcpar-refetch", daemon=True).start()
        elif mt == "engine_unregistered":
            with self._cond:
                gone = self._engines.pop(int(msg.meta["engine"]["id"]), None)
                self._mpi_engines -= bool(gone and gone.get("mpi_world"))
                self._cond.notify_all()

    def _fetch_quietly(self, msg_ids: list[str]) -> None:
        try:
            self._fetch(msg_ids)
        except Exception as e:  # the tasks stay pending; get_result() asks again
            log.warning("could not fetch replies the controller held back: %s", e)

    def _set_engines(self, engines: list[dict[str, Any]]) -> None:
        with self._cond:
            self._engines = {int(e["id"]): e for e in engines}
            self._mpi_engines = sum(bool(e.get("mpi_world")) for e in engines)
            self._cond.notify_all()

    def _on_stream(self, msg: wire.Message) -> None:
        """Live output of a running request: appended to its metadata as it comes."""
        msg_id = msg.header.get("parent")
        name, text = msg.meta.get("name"), msg.meta.get("text", "")
        if msg_id not in self.outstanding or name not in ("stdout", "stderr"):
            return  # the final reply, with the whole output, already arrived
        md = self.metadata.get(msg_id)
        if md is not None:
            md[name] = md[name] + text
        for callback in list(self._stream_callbacks):
            try:
                callback(msg_id, msg.header.get("engine_id"), name, text)
            except Exception:
                log.exception("a stream callback failed")

    def _on_display(self, msg: wire.Message) -> None:
        """Live rich output (display()) of a running request."""
        msg_id = msg.header.get("parent")
        output = msg.meta.get("output")
        md = self.metadata.get(msg_id)
        if msg_id not in self.outstanding or md is None or not isinstance(output, dict):
            return
        if datapub.is_data(output):  # publish_data(): into ar.data, not the outputs
            datapub.take_data([output], md["data"])
            return
        md["outputs"] = md["outputs"] + [output]
        for callback in list(self._display_callbacks):
            try:
                callback(msg_id, msg.header.get("engine_id"), output, len(md["outputs"]) - 1)
            except Exception:
                log.exception("a display callback failed")

    def _on_rejected(self, reason: str) -> None:
        """The controller refused our key (a bad signature, or a refused CurveZMQ handshake):
        every waiting call and task fails now with ConnectionRejected, and so does every later one."""
        first = self._rejected is None
        self._rejected = security.rejection_message(
            self._transport.url if self._transport else "?", reason, self._source)
        if first:
            log.error("%s", self._rejected)
        with self._lock:
            futures = list(self._requests.values())
            tasks = list(self.outstanding)
        for fut in futures:
            if not fut.done():
                fut.set_exception(ConnectionRejected(self._rejected))
        for msg_id in tasks:
            self._fail_locally(msg_id, ConnectionRejected(self._rejected))

    def _on_refused(self, msg_id: str, reason: str) -> None:
        """The controller dropped our request ``msg_id`` as not verifying: it fails now, with why."""
        text = (f"the controller refused request {msg_id} ({reason}): it was altered on the way "
                "(something between this client and the controller rewrites traffic: use [security] "
                "transport = \"curve\") or signed with another cluster's key (a stale connection file)")
        log.error("%s", text)
        self._fail_request(msg_id, ConnectionRejected(text), "MessageIntegrityError", text)

    def _on_controller_failed(self, msg_id: str, reason: str) -> None:
        """The controller hit an error handling our request ``msg_id`` (its log has the traceback)."""
        from ..cli import ISSUES_URL

        text = (f"the controller failed handling request {msg_id} ({reason}); this is a bug in hpcpar: "
                f"please report it at {ISSUES_URL} with the controller's log")
        log.error("%s", text)
        self._fail_request(msg_id, RuntimeError(text), "ControllerError", text)

    def _fail_request(self, msg_id: str, request_error: Exception, ename: str, text: str) -> None:
        fut = self._requests.get(msg_id)
        if fut is not None:
            if not fut.done():
                fut.set_exception(request_error)
            return
        for m in self._parts_refused(msg_id):  # _fail_locally ignores ids not waiting
            self._fail_locally(m, remote_error(ename, text))

    def _parts_refused(self, parent: str) -> list[str]:
        """The controller refused a whole direct request (answering its base msg_id): each
        target's part fails with that error, so no AsyncResult waits for ever."""
        prefix = parent + targetset.SEPARATOR
        with self._lock:
            if parent in self.outstanding:
                return [parent]
            return [m for m in self.outstanding if m.startswith(prefix)] or [parent]


def _hand_started_gone(source: str, cluster_id: str) -> str | None:
    """For a dead controller started by hand (no cluster state next to its connection file),
    the advice ``hpcpar list`` and ``status`` give: ``hpcpar start --restore`` has nothing
    to restore there."""
    path = Path(source)
    if path.parent.name != "security":
        return None
    from ..commands.handstarted import dead_message, find

    pd = ProfileDir(path.parent.parent)
    hand = find(pd, cluster_id)
    return dead_message(pd, cluster_id, hand) if hand is not None and hand.alive is False else None
