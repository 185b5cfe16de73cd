"""The controller's client side: verifying client messages, the controller's own
requests (connect, queue status, abort, results...) and the hub's answers.

A mixin of Controller (app.py): its methods run on the controller's loop and
use its sockets, signer, engine registry and hub.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import zmq

from .. import targetset, wire

log = logging.getLogger("hpcpar.controller")

HUB_REQUESTS = ("db_query_request", "hub_history_request", "stop_distributed_request", "task_stream_request")


class ClientRequests:
    def _unpack(self, frames: list[Any], origin: str) -> tuple[bytes, wire.Message] | None:
        ident = bytes(frames[0])
        try:
            # Buffer frames are forwarded unread: the engine that reads them verifies them
            # (and reports altered data as the task's error), so the controller does not hash them.
            msg = self.signer.unpack(frames[1:], check_buffers=False)
        except wire.BadMessage as e:
            log.warning("dropped a message from a %s (%s)", origin, e)
            self._tell_unauthenticated(origin, ident, str(e))
            if origin == "client":
                self._tell_refused(frames, str(e))
            return None
        if not self.replay.fresh(msg.header):
            return None  # a replay (or far too old): dropped, logged once per sender
        return ident, msg

    def _tell_unauthenticated(self, origin: str, ident: bytes, reason: str) -> None:
        """Answer a bad message once per peer per second, so a client with a
        stale key gets a clear error instead of a time-out. Unsigned: the
        peer cannot verify us either."""
        now = time.monotonic()
        if now - self._auth_warned.get(ident, 0.0) < 1.0:
            return
        if len(self._auth_warned) > 10_000:
            self._auth_warned.clear()
        self._auth_warned[ident] = now
        sock = self.client_socket if origin == "client" else self.engine_socket
        try:
            sock.send_multipart([ident, b"hpcpar-rejected", reason.encode()], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _tell_refused(self, frames: list[Any], reason: str, notice: bytes = wire.REFUSED) -> None:
        """Name a request that did not verify to its client's receiving socket (its session),
        so that task fails at once: the rejection notice above goes to the socket it left
        from, which a client that sends from its own thread does not read. Unsigned (the
        header is not authentic): the client only fails a task of its own still waiting."""
        try:
            header = json.loads(bytes(frames[2])) if len(frames) > 2 else None
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(header, dict):
            return
        session, msg_id = header.get("session"), header.get("msg_id")
        if isinstance(session, str) and session and isinstance(msg_id, str) and len(msg_id) <= 64:
            try:
                self.client_socket.send_multipart([session.encode(), notice, msg_id.encode(),
                                                   reason.encode()], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    def handle_client(self, frames: list[Any]) -> None:
        unpacked = self._unpack(frames, "client")
        if unpacked is None:
            return
        ident, msg = unpacked
        # Replies go to the client's receiving socket, named by its session (the
        # request may have left from the client's sending socket).
        session = msg.header.get("session")
        if isinstance(session, str) and session:
            ident = session.encode()
        self.clients.add(ident)
        route = msg.header.get("route", "controller")
        if route == "direct":
            self.route_direct(ident, msg)
        elif route == "lb":
            self.route_lb(ident, msg)
        elif msg.msg_type in HUB_REQUESTS:
            self.hub.request(ident, msg)
        else:
            handler = getattr(self, "on_" + msg.msg_type, None)
            if handler is None:
                self.reply_client(ident, "error_reply", msg.msg_id, {
                    "status": "error", "ename": "ValueError",
                    "evalue": f"unknown controller request {msg.msg_type!r}"})
            else:
                handler(ident, msg)

    def on_connect_request(self, ident: bytes, msg: wire.Message) -> None:
        self.reply_client(ident, "connect_reply", msg.msg_id, {
            "engines": [e.describe() for e in self.engines.ready()],
            "cluster_id": self.config.cluster_id,
            "heartbeat_timeout": self.config.heartbeat_timeout,
            "scheme": self.config.scheme,
            "db": self.config.db,
            "pool": self.pool_state or {},
        })

    # The elastic pool's state as its manager last told it (pool/manager.py): every client
    # hears it, so a client over an SSH tunnel, which cannot read <profile>/run, learns too.
    pool_state: dict[str, Any] | None = None

    def on_pool_state_request(self, ident: bytes, msg: wire.Message) -> None:
        state = {"stopped": str(msg.meta.get("stopped") or "")}
        changed = state != (self.pool_state or {"stopped": ""})
        self.pool_state = state
        self.reply_client(ident, "pool_state_reply", msg.msg_id, {"status": "ok"})
        if changed:
            self.notify_clients("pool_state", state)

    def on_disconnect_request(self, ident: bytes, msg: wire.Message) -> None:
        self.clients.discard(ident)

    def on_engine_info_request(self, ident: bytes, msg: wire.Message) -> None:
        """Lets an engine that was given the client file find the engine port."""
        self.reply_client(ident, "engine_info_reply", msg.msg_id, {"urls": self.engine_urls})

    def on_queue_status_request(self, ident: bytes, msg: wire.Message) -> None:
        targets = msg.meta.get("targets") or self.engines.ids()
        verbose = bool(msg.meta.get("verbose"))
        status: dict[str, Any] = {}
        now = time.monotonic()
        for eid in targets:
            rec = self.engines.by_id.get(eid)
            if rec is None:
                continue
            direct = [m for m, lb in rec.outstanding.items() if not lb]
            lb = [m for m, is_lb in rec.outstanding.items() if is_lb]
            status[str(eid)] = {
                "queue": direct if verbose else len(direct),
                "tasks": lb if verbose else len(lb),
                "completed": rec.completed,
            }
            if verbose:
                status[str(eid)]["status"] = rec.current_status(now)
        queued = self.lb.unassigned()
        status["unassigned"] = queued if verbose else len(queued)
        self.reply_client(ident, "queue_status_reply", msg.msg_id, {"status": status})

    def on_abort_request(self, ident: bytes, msg: wire.Message) -> None:
        """Drop queued load-balanced tasks here; ask engines to drop theirs (and
        with ``interrupt``, to interrupt the ones running)."""
        msg_ids = msg.meta.get("msg_ids")
        wanted = set(msg_ids) if msg_ids is not None else None
        aborted = self.lb.abort(wanted, ident)
        targets = msg.meta.get("targets")
        engine_ids = targets if targets is not None else self.engines.ids()
        for eid in engine_ids:
            rec = self.engines.by_id.get(eid)
            if rec is not None:
                # "everything queued" becomes the explicit list of what this engine holds
                ids = msg_ids if msg_ids is not None else [m for m in rec.outstanding if self.tasks.get(m) is not None
                                                           and self.tasks[m].client == ident]
                frames = self.signer.pack(self.signer.header("abort_request"), {"msg_ids": ids})
                self.to_engine(rec, frames, control=True)
        interrupted = []
        if msg.meta.get("interrupt") and wanted:
            for mid in wanted:
                task = self.tasks.get(mid)
                rec = self.engines.by_id.get(task.engine_id) if task and task.engine_id is not None else None
                if rec is not None:
                    self.to_engine(rec, self.signer.pack(self.signer.header("interrupt_request"), {"msg_ids": [mid]}),
                                   control=True)
                    interrupted.append(mid)
        self.reply_client(ident, "abort_reply", msg.msg_id, {"aborted_queued": aborted, "interrupted": interrupted})

    def on_hub_shutdown_request(self, ident: bytes, msg: wire.Message) -> None:
        self.reply_client(ident, "hub_shutdown_reply", msg.msg_id, {"status": "ok"})
        self.running = False

    def on_engines_request(self, ident: bytes, msg: wire.Message) -> None:
        now = time.monotonic()
        engines = []
        for e in self.engines.ready():
            d = e.describe()
            d.update(
                queued=sum(1 for lb in e.outstanding.values() if not lb),
                running_lb=e.lb_in_flight,
                completed=e.completed,
                last_heartbeat_age=round(now - e.last_seen, 3),
                status=e.current_status(now),
            )
            engines.append(d)
        self.reply_client(ident, "engines_reply", msg.msg_id, {
            "engines": engines,
            "pool": self.pool_state or {},
            "tasks": {**self.hub.totals(), "pending": len(self.tasks), "unassigned": len(self.lb.unassigned())},
            "forwarding": self.forwarding.describe([e.ident for e in self.engines.by_id.values()]),
        })

    def _pending_of(self, msg_ids: list[str], ident: bytes | None = None) -> list[str]:
        pending = [m for m in msg_ids if m in self.tasks]
        if ident is not None:
            for m in pending:
                task = self.tasks[m]
                if ident != task.client and ident not in task.watchers:
                    task.watchers.append(ident)
        return pending

    def on_result_request(self, ident: bytes, msg: wire.Message) -> None:
        """Results of any client's tasks: finished ones from the store, pending
        ones when they finish (the asking client is added as a watcher)."""
        msg_ids = list(msg.meta.get("msg_ids") or [])
        # After --restore, what the database does not know may still come from an engine (recovery.py).
        self.hub.request(ident, msg, {"pending": self._pending_of(msg_ids, ident),
                                      "watch_missing": self.recovery_open})

    def on_resync_request(self, ident: bytes, msg: wire.Message) -> None:
        """A client reconnected: resend what it may have missed."""
        self.on_result_request(ident, msg)

    def on_result_status_request(self, ident: bytes, msg: wire.Message) -> None:
        self.hub.request(ident, msg, {"pending": self._pending_of(list(msg.meta.get("msg_ids") or []))})

    def on_purge_request(self, ident: bytes, msg: wire.Message) -> None:
        self.hub.request(ident, msg, {"pending": list(self.tasks)})

    def on_become_dask_request(self, ident: bytes, msg: wire.Message) -> None:
        """The hub starts a dask scheduler on the engines' interface (bridges/dask_workers.py)."""
        c = self.config
        self.hub.request(ident, msg, {"host": c.engine_ip or c.ip})

    def on_resubmit_request(self, ident: bytes, msg: wire.Message) -> None:
        self._resubmits[msg.msg_id] = {"mapping": {}, "client": ident}
        self.hub.request(ident, msg)

    # -- the hub's answers ------------------------------------------------------------

    def handle_hub(self, frames: list[Any]) -> None:
        kind = bytes(frames[0])
        ident = bytes(frames[1])
        if kind == b"client":
            self.to_client(ident, frames[2:])
        elif kind == b"watch":
            self.watch_orphans(ident, json.loads(bytes(frames[2])))
        elif kind == b"looked-up":
            self.lb.looked_up(json.loads(bytes(frames[2])))
        elif kind == b"resubmit":
            self._resubmit_one(ident, bytes(frames[2]).decode(), json.loads(bytes(frames[3])), frames[4:])
        elif kind == b"resubmit-done":
            parent = bytes(frames[2]).decode()
            state = self._resubmits.pop(parent, {"mapping": {}})
            missing = json.loads(bytes(frames[3])).get("missing", [])
            self.reply_client(ident, "resubmit_reply", parent, {"mapping": state["mapping"], "missing": missing})

    def _resubmit_one(self, ident: bytes, parent: str, info: dict[str, Any], stored: list[Any]) -> None:
        """Run a stored request again under a new msg_id, for the asking client."""
        try:
            old = self.signer.unpack(stored, check_buffers=False)  # the engine checks the original digests
        except wire.BadMessage:
            return
        header = dict(old.header)
        new_id = wire.new_id()
        header.update(msg_id=new_id, session=ident.decode(errors="replace"), date=wire.now(), resubmitted=info["old"])
        if header.get("route") == "direct":
            header["targets"] = [info["engine_id"]]
        # The original client's host key must not make the engine answer the asking client
        # (maybe on another host) through shared memory.
        header.pop("shm_key", None)
        frames = self.signer.pack(header, old.meta, stored[3], stored[4:])
        msg = self.signer.unpack(frames, check_buffers=False)
        state = self._resubmits.get(parent)
        if state is not None:
            direct = header.get("route") == "direct"
            state["mapping"][info["old"]] = targetset.task_id(new_id, info["engine_id"]) if direct else new_id
        if header.get("route") == "direct":
            self.route_direct(ident, msg)
        else:
            self.route_lb(ident, msg)

