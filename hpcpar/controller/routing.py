"""Routing: a client's request to its engine(s) or the load balancer, and each
reply (or the failure reported in an engine's place) back to its client.

A mixin of Controller (app.py): the hot path; methods run on the controller's
loop with no extra layer per message.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .. import sharedmem, targetset, wire
from .engines import EngineRecord
from .tasks import ReplyGroup, Task, reply_type_of

# Requests an engine handles on its control socket at once, even while user code runs.
CONTROL_REQUESTS = frozenset({"signal_request", "shutdown_request", "abort_request", "interrupt_request"})
DROPPED = -1  # app.to_client: a client that stopped reading could not take it
BULK_BYTES = 16 << 20  # a fan-out this large extends heartbeat timeouts...
BULK_RATE = 100e6  # ...by its size over this many bytes per second
REFUSAL_LOG_EVERY = 10.0  # s between warnings about one engine's refusal notices

log = logging.getLogger("hpcpar.controller")


class Routing:
    def route_direct(self, ident: bytes, msg: wire.Message) -> None:
        h = msg.header
        try:
            targets = targetset.expand(h.get("targets"))
        except ValueError as e:
            self.reply_client(ident, "error_reply", msg.msg_id, {
                "status": "error", "ename": "ValueError", "evalue": f"malformed direct request: {e}"})
            return
        if self.recovery_open and self.hold_for_returning(ident, msg, targets):
            return  # sent when its engines are back from the restore (recovery.py)
        msg_ids = [targetset.task_id(msg.msg_id, eid) for eid in targets]
        if self.orphan_watch:
            self.resent(*msg_ids)  # a client sending again what the crash lost (recovery.py)
        reply_type = reply_type_of(msg.msg_type)
        self.hub.submitted_many(list(zip(msg_ids, targets)), h, msg.frames)
        self._allow_for_bulk(msg.frames, len(targets))
        group = ReplyGroup(ident, len(targets)) if h.get("coalesce") and len(targets) > 1 else None
        control = msg.msg_type in CONTROL_REQUESTS
        sends: list[tuple[bytes, str]] = []
        by_ident: dict[bytes, EngineRecord] = {}
        for eid, mid in zip(targets, msg_ids):
            task = Task(ident, mid, reply_type, eid, False, h)
            task.group = group
            rec = self.engines.by_id.get(eid)
            if rec is None or not rec.ready:
                self.fail_task(task, "EngineError", f"engine {eid} is not registered")
                continue
            if rec.retiring is not None:
                self.fail_task(task, "EngineError", f"engine {eid} is {rec.retiring}: it takes no new work; "
                               "send it to the other engines (rc.ids); an elastic pool starts replacements")
                continue
            self.tasks[mid] = task
            rec.outstanding[mid] = False
            dest = self._address(rec, control)
            sends.append((dest, mid))
            by_ident[dest] = rec
        # One copy per directly connected engine, one per top-level forwarder for the engines behind it.
        for dest in self.forwarding.broadcast(sends, msg.frames, batch=group is not None):
            self.engine_died(by_ident[dest], "its connection is gone")

    def route_lb(self, ident: bytes, msg: wire.Message) -> None:
        if self.orphan_watch:
            self.resent(msg.msg_id)  # a client sending again what the crash lost (recovery.py)
        task = Task(ident, msg.msg_id, reply_type_of(msg.msg_type), None, True, msg.header, msg.frames)
        self.tasks[msg.msg_id] = task
        self.hub.submitted(msg.msg_id, msg.header, msg.frames, None)
        self.lb.submit(task)

    def dispatch_lb(self, task: Task, rec: EngineRecord) -> None:
        """Send a load-balanced task to the engine the scheme picked."""
        rec.lb_in_flight += 1
        rec.last_assigned = time.monotonic()
        rec.outstanding[task.msg_id] = True
        task.engine_id = rec.id
        task.attempts += 1
        self.hub.assigned(task.msg_id, rec.id, task.attempts)
        self.forwarding.request_copies += 1
        if not self.to_engine(rec, task.frames or []):
            self.engine_died(rec, "its connection is gone")

    def fail_task(self, task: Task, ename: str, evalue: str, notify: bool = True) -> None:
        """Answer a task on the engine's behalf: nothing is lost silently."""
        self.tasks.pop(task.msg_id, None)
        header = self.signer.header(
            task.reply_type,
            parent=task.msg_id,
            engine_id=task.engine_id,
            status="error",
            started=None,
            completed=wire.now(),
        )
        meta = wire.failure_meta(ename, evalue)
        meta["engine_info"] = {"engine_id": task.engine_id, "method": task.header.get("msg_type")}
        frames = self.signer.pack(header, meta)
        self.hub.finished(task.msg_id, header, frames)
        self.lb.task_finished(task.msg_id, False, task.engine_id)
        if notify:
            self.deliver(task, frames)

    def deliver(self, task: Task, frames: list[Any]) -> bool:
        """A task's reply to its client (alone, or with its broadcast group) and watchers.
        False if a client that stopped reading had it dropped (the database must keep it)."""
        ok = True
        for ident in task.watchers:
            ok = self.to_client(ident, frames, (task.msg_id,)) != DROPPED and ok
        group = task.group
        if group is None:
            return self.to_client(task.client, frames, (task.msg_id,)) != DROPPED and ok
        group.parts.append(frames)
        group.msg_ids.append(task.msg_id)
        group.remaining -= 1
        if group.remaining == 0:
            header = self.signer.header("coalesced_reply", counts=[len(p) for p in group.parts])
            packed = self.signer.pack(header, {}, b"", [f for p in group.parts for f in p], nested=True)
            # Earlier parts were recorded with keep=False: on a drop the client is told their ids,
            # and what the database did not keep is reported to it as too large (not lost silently).
            return self.to_client(group.client, packed, tuple(group.msg_ids)) != DROPPED and ok
        return ok

    def on_engine_reply(self, rec: EngineRecord, msg: wire.Message) -> None:
        parent = msg.header.get("parent")
        task = self.tasks.get(parent)
        if task is None:
            self.orphan_reply(rec, msg)  # after --restore, maybe a reply the database lost (recovery.py)
            # Already failed on the engine's behalf (e.g. declared dead then back): nobody
            # will read this reply, so its shared-memory files go now.
            if msg.header.get("shm"):
                sharedmem.unlink(sharedmem.names_in(msg.meta, self.shm_prefix))
            return
        if task.engine_id != rec.id:
            self.reply_elsewhere(task, rec)  # a reply replayed after --restore (recovery.py)
        lb = rec.outstanding.pop(parent, False)
        rec.completed += 1
        status = msg.header.get("status", "ok")
        if lb:
            rec.lb_in_flight -= 1
            if status == "unmet":
                task.blacklist.add(rec.id)
                self.lb.retry(task, rec, avoid_engine=False)
                self.lb.schedule()
                return
            if status == "error" and task.retries_left > 0:
                task.retries_left -= 1
                self.lb.retry(task, rec, avoid_engine=True)
                self.lb.schedule()
                return
        del self.tasks[parent]
        task.frames = None
        kept = self.deliver(task, msg.frames)
        if msg.header.get("shm") and task.client not in self.clients:
            # Its client closed (or is gone): nobody will map and remove the reply's files.
            sharedmem.unlink(sharedmem.names_in(msg.meta, self.shm_prefix))
        self.hub.finished(parent, msg.header, msg.frames, keep=not kept)
        self.lb.task_finished(parent, status == "ok", rec.id)
        if lb:
            self.lb.schedule()
        if rec.retiring is not None:
            self.retire_if_idle(rec)  # a draining engine leaves once it holds no work

    def on_engine_refused(self, ident: bytes, msg_id_frame: Any, reason_frame: Any) -> None:
        """An engine did not run a request that failed its signature check (engine/refusal.py):
        altered between here and there. The notice is unsigned, so it fails a task only if
        that task is outstanding on exactly this engine: a forger on the path can do no more
        than fail a task it could have dropped anyway."""
        rec = self.engines.lookup(ident)
        msg_id = bytes(msg_id_frame).decode(errors="replace")
        task = self.tasks.get(msg_id) if rec is not None else None
        if rec is None or task is None or msg_id not in rec.outstanding or task.engine_id != rec.id:
            self._refusal_log(ident, f"ignored a refusal notice naming {msg_id[:80]!r}: no such task is "
                              "outstanding on that engine")
            return
        reason = bytes(reason_frame).decode(errors="replace")[:300]
        text = (f"engine {rec.id} refused request {msg_id} ({reason}): it was altered on its way from the "
                "controller to the engine, and was not run; something on that network path rewrites "
                "traffic (use [security] transport = \"curve\" on an untrusted network)")
        self._refusal_log(ident, text)
        if rec.outstanding.pop(msg_id):
            rec.lb_in_flight -= 1
            if task.retries_left > 0:  # as for an error reply: another engine, from our own copy
                task.retries_left -= 1
                self.lb.retry(task, rec, avoid_engine=True)
                self.lb.schedule()
                return
        self.fail_task(task, "MessageIntegrityError", text)
        self.lb.schedule()
        if rec.retiring is not None:
            self.retire_if_idle(rec)

    def _refusal_log(self, ident: bytes, text: str) -> None:
        """Logged once per engine per REFUSAL_LOG_EVERY seconds, with how many were not."""
        now = time.monotonic()
        last, quiet = self._refusals_logged.get(ident, (-1e9, 0))
        if now - last < REFUSAL_LOG_EVERY:
            self._refusals_logged[ident] = (last, quiet + 1)
            return
        if len(self._refusals_logged) > 10_000:
            self._refusals_logged.clear()
        self._refusals_logged[ident] = (now, 0)
        log.warning("%s%s", text, f" ({quiet} more refusal notices from this engine since)" if quiet else "")

    def _allow_for_bulk(self, frames: list[Any], copies: int) -> None:
        """A large fan-out (say 10 MB to 256 engines) keeps the network, this
        process's I/O and the engines busy for seconds, and heartbeats queue
        behind it: give engines that much more time before calling them dead."""
        nbytes = sum(len(f) for f in frames[3:]) * copies
        if nbytes >= BULK_BYTES:
            until = time.monotonic() + nbytes / BULK_RATE
            self._bulk_until = max(self._bulk_until, until)

