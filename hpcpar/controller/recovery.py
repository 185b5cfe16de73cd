"""Nothing lost at a controller crash: stored acknowledgements and `--restore` recovery.

The hub writes records in batches (hub.py), so when a controller is SIGKILLed the last
fraction of a second of records is gone. Instead of a disk write per message, engines
keep every reply until this controller tells them it is committed ("stored_ack", a
few times a second, many ids per message; engine/outbox.py). After ``--restore``:

- tasks the database shows queued (no engine) are queued again;
- tasks it shows on an engine wait for that engine to re-attach. The engine sends the
  replies it still holds, then answers an "engine_resync" naming the tasks it never
  received: those run again (load-balanced) or are sent to it again (direct);
- replies for tasks the database never recorded (the submission was in the lost batch)
  are recorded and go to the client that asks for them (its resync after reconnecting);
- what no engine returns within the re-attach window fails with a clear error.

A mixin of Controller (app.py), like routing.py and lifecycle.py.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from .. import targetset, wire
from .engines import EngineRecord
from .jobcheck import JobCheck
from .tasks import Task, reply_type_of

log = logging.getLogger("hpcpar.controller")

REQUEUE_AFTER = 10.0  # seconds after a restore that queued tasks wait at most for returning engines
# A client told which of its tasks the database does not know sends those requests again at
# once; the ones it cannot send (not held: too large, shared memory) fail this long after.
ORPHAN_GRACE = 5.0


class Recovery:
    def _recovery_init(self) -> None:
        self.acks: deque[tuple[int, EngineRecord, str]] = deque()  # (hub op count, engine, msg_id)
        self.recovering: dict[int, dict[str, Task]] = {}  # engine id -> tasks it held at the crash
        self.returning: set[int] = set()  # engines of the old controller, re-attached, not resynced yet
        self.resyncing: set[int] = set()  # asked "engine_resync", not answered yet
        self.orphan_watch: dict[str, bytes] = {}  # msg_id the database does not know -> client waiting
        self.orphans: dict[str, list[Any]] = {}  # replies replayed while recovering (for late watches)
        # Tasks the database shows queued: held until the engines' replays are in (the crash may
        # have lost the record of their dispatch), or REQUEUE_AFTER seconds, then queued again.
        self.requeue: list[Task] = []
        self.requeue_at = time.monotonic() + REQUEUE_AFTER
        self.held_direct: list[tuple[bytes, wire.Message]] = []  # requests for engines not back yet
        self.recovery_open = bool(self.config.restore)
        self.orphans_fail_at: float | None = None
        # (pid, start time) of the old controller's engines on this host, by engine id
        self.expected_procs: dict[int, tuple[int, int]] = {}
        self.job_check: JobCheck | None = None  # asks the batch system about the others' jobs

    def watch_jobs(self, jobs: dict[int, str]) -> None:
        """Engines of the old controller in batch jobs (engine id -> job id): given up as soon
        as the batch system says their job is gone (jobcheck.py)."""
        if jobs and self.config.restore:
            self.job_check = JobCheck(self.config.profile_dir, self.config.cluster_id, jobs).start()

    # -- acknowledgements (every controller) --------------------------------------------

    def note_reply(self, rec: EngineRecord, msg_id: str) -> None:
        """The engine may forget this reply once the hub has committed what was queued up to now."""
        self.acks.append((self.hub.finished_count, rec, msg_id))

    def send_acks(self) -> None:
        """Called a few times a second: one "stored_ack" per engine for what the hub committed."""
        acks, done = self.acks, self.hub.committed_finished
        if not acks or acks[0][0] > done:
            return
        by_engine: dict[int, tuple[EngineRecord, list[str]]] = {}
        while acks and acks[0][0] <= done:
            _, rec, msg_id = acks.popleft()
            by_engine.setdefault(id(rec), (rec, []))[1].append(msg_id)
        for rec, msg_ids in by_engine.values():
            if self.engines.by_id.get(rec.id) is rec:
                self.to_engine(rec, self.signer.pack(self.signer.header("stored_ack"), {"msg_ids": msg_ids}),
                               control=True)

    # -- after --restore --------------------------------------------------------------

    def restore_tasks(self, backend: Any) -> None:
        """Tasks the old controller had not finished, as its database shows them."""
        lost = backend.find({"completed": {"$exists": False}},
                            ["msg_id", "session", "msg_type", "engine_id", "request"])
        queued = held = failed = 0
        for rec in lost:
            mid, eid = rec["msg_id"], rec.get("engine_id")
            client = rec["session"].encode() if rec.get("session") else b""
            try:
                msg: wire.Message | None = self.signer.unpack(rec.get("request") or [], check_buffers=False)
            except wire.BadMessage:
                msg = None  # not stored (too large, or in shared memory)
            lb = msg.header.get("route") == "lb" if msg is not None else eid is None
            if msg is not None and mid != (msg.msg_id if lb else targetset.task_id(msg.msg_id, eid)):
                msg = None
            task = Task(client, mid, reply_type_of(rec.get("msg_type") or "apply_request"), eid, lb,
                        msg.header if msg is not None else {}, msg.frames if msg is not None else None)
            if eid is None:
                if msg is None or not lb:
                    self.fail_task(task, "EngineError", "the controller died before this task was sent to an "
                                   "engine, and its request was not stored; resubmit it", notify=False)
                    failed += 1
                    continue
                self.tasks[mid] = task
                self.requeue.append(task)
                queued += 1
                continue
            if lb:
                task.retries_left = int(task.header.get("retries") or 0)
            self.tasks[mid] = task
            self.recovering.setdefault(int(eid), {})[mid] = task
            held += 1
        if lost:
            log.warning("restored: of %d unfinished tasks, %d queued again, %d wait for their engines to "
                        "re-attach, %d failed", len(lost), queued, held, failed)

    def engine_returning(self, rec: EngineRecord) -> None:
        """An engine of the old controller registers again (on_register)."""
        self.returning.add(rec.id)
        if self.job_check is not None:
            self.job_check.forget(rec.id)

    def engine_back(self, rec: EngineRecord) -> None:
        """Its work socket is introduced: it holds the tasks it held at the crash; ask which it never got."""
        if rec.id not in self.returning:
            return
        self.returning.discard(rec.id)
        held = [t for t in self.recovering.pop(rec.id, {}).values() if self.tasks.get(t.msg_id) is t]
        for task in held:
            rec.outstanding[task.msg_id] = task.lb
            if task.lb:
                rec.lb_in_flight += 1
        self.resyncing.add(rec.id)
        self.to_engine(rec, self.signer.pack(self.signer.header("engine_resync"),
                                             {"msg_ids": [t.msg_id for t in held]}))
        if self.held_direct:
            self._release_direct()  # those for engines still away are held again

    def on_resync_answer(self, rec: EngineRecord, msg: wire.Message) -> None:
        """The tasks this engine never received: sent again (its replies held are in already)."""
        self.resyncing.discard(rec.id)
        for mid in msg.meta.get("msg_ids") or []:
            task = self.tasks.get(mid)
            if task is None or rec.outstanding.pop(mid, None) is None:
                continue
            if task.frames is None:
                self.fail_task(task, "EngineError", f"engine {rec.id} never received task {mid} before the "
                               "controller died, and its request was not stored; resubmit it")
            elif task.lb:
                rec.lb_in_flight -= 1
                self.lb.retry(task, None, avoid_engine=False)
            else:
                rec.outstanding[mid] = False
                self.to_engine(rec, task.frames)
        self.lb.schedule()
        self._maybe_close_recovery()

    def reply_elsewhere(self, task: Task, rec: EngineRecord) -> None:
        """A replayed reply from ``rec`` for a task queued again meanwhile: take it off
        the queue or the engine it went to (that run's reply will be dropped)."""
        other = self.engines.by_id.get(task.engine_id) if task.engine_id is not None else None
        if other is not None and other is not rec and other.outstanding.pop(task.msg_id, None) is not None:
            if task.lb:
                other.lb_in_flight -= 1

    def orphan_reply(self, rec: EngineRecord, msg: wire.Message) -> None:
        """A reply for no task in flight. While recovering it may be one the database
        never recorded: record it (unless the record is complete) and give it to its client."""
        if not self.recovery_open:
            return
        parent = msg.header.get("parent")
        self.hub.finished(parent, msg.header, msg.frames, keep=True, recovered=True)
        self.orphans[parent] = msg.frames
        ident = self.orphan_watch.pop(parent, None)
        if ident is not None:
            self.to_client(ident, msg.frames, (parent,))

    def watch_orphans(self, ident: bytes, msg_ids: list[str]) -> None:
        """A reconnected client waits for tasks the database does not know: an engine may hold them."""
        for mid in msg_ids:
            frames = self.orphans.get(mid)
            if frames is not None:  # replayed while the hub answered
                self.to_client(ident, frames, (mid,))
            else:
                self.orphan_watch[mid] = ident
        if not self.recovery_open:
            # Not at once: the client is about to send most of these again (resent()).
            self.orphans_fail_at = time.monotonic() + ORPHAN_GRACE

    def _release_requeue(self) -> None:
        """Queue again what the database shows queued and no returning engine has answered."""
        tasks, self.requeue = self.requeue, []
        for task in tasks:
            if self.tasks.get(task.msg_id) is task:
                self.lb.submit(task)

    def hold_for_returning(self, ident: bytes, msg: wire.Message, targets: list[int]) -> bool:
        """A request for an engine of the old controller that has not re-attached yet waits for it
        (until the re-attach window closes), instead of failing with "not registered"."""
        coming = set(self.engines.expected.values()) | self.returning | set(self.recovering)
        coming |= {e.id for e in self.engines.by_id.values() if not e.ready}
        if not coming.intersection(targets):
            return False
        self.held_direct.append((ident, msg))
        return True

    def _release_direct(self) -> None:
        held, self.held_direct = self.held_direct, []
        for ident, msg in held:
            self.route_direct(ident, msg)

    def resent(self, *msg_ids: str) -> None:
        """A client sends again a request the database did not know: it runs as a new one."""
        for mid in msg_ids:
            self.orphan_watch.pop(mid, None)

    def check_recovery(self, now: float) -> None:
        if self.orphans_fail_at is not None and now > self.orphans_fail_at:
            self.orphans_fail_at = None
            self._fail_orphans()
        if not self.recovery_open:
            return
        if self.requeue and now > self.requeue_at:
            self._release_requeue()
        if self.expected_procs:
            self._forget_dead_engines()
        if self.job_check is not None:
            for eid, _job, said in self.job_check.gone():
                self._give_up_engine(eid, f"engine {eid} held task {{}} when the controller died, and its batch "
                                     f"job is gone ({said}): it will not re-attach",
                                     f"engine {eid}: its batch job is gone ({said})")
        if now > self._expect_until:
            for eid, tasks in list(self.recovering.items()):
                self._give_up_held(tasks, f"engine {eid} held task {{}} when the controller died and did "
                                   "not re-attach after the restore")
            self.recovering.clear()
            self.returning.clear()
            self.resyncing.clear()
            if self.job_check is not None:
                self.job_check.stop()
            self.recovery_open = False  # what is still held fails as usual now
            self._release_direct()
            self.recovery_open = True
            self.lb.schedule()
        self._maybe_close_recovery()

    def _forget_dead_engines(self) -> None:
        """Engines of the old controller on this host whose process is gone (they died with it)
        will not re-attach: their tasks are retried or fail now, not when the window closes."""
        from ..launchers.process import process_start_time

        coming = {eid: uuid for uuid, eid in self.engines.expected.items()}
        for eid, (pid, start) in list(self.expected_procs.items()):
            if eid not in coming:
                del self.expected_procs[eid]  # it came back
                continue
            if process_start_time(pid) == start:
                continue
            del self.expected_procs[eid]
            self._give_up_engine(eid, f"engine {eid} held task {{}} when the controller died, and died too "
                                 f"(its process {pid} is gone)", f"engine {eid} (pid {pid} on this host) died "
                                 "with the controller")

    def _give_up_engine(self, eid: int, why: str, what: str) -> None:
        """An engine of the old controller will not re-attach: its tasks are retried or fail
        now (``why``, ``{}`` = the task id), requests held for it fail as for any unknown engine."""
        uuid = next((u for u, e in self.engines.expected.items() if e == eid), None)
        if uuid is None:
            return  # it came back meanwhile (or was given up already)
        del self.engines.expected[uuid]
        self._give_up_held(self.recovering.pop(eid, {}), why)
        log.warning("%s: its tasks are retried or failed now", what)
        self._release_direct()
        self.lb.schedule()

    def _give_up_held(self, tasks: dict[str, Task], why: str) -> None:
        """Tasks an engine held at the crash that will not come back: retried if they may be,
        else failed (``why`` names the engine; ``{}`` in it becomes the task's id)."""
        for task in tasks.values():
            if self.tasks.get(task.msg_id) is not task:
                continue
            if task.lb and task.retries_left > 0 and task.frames is not None:
                task.retries_left -= 1
                self.lb.retry(task, None, avoid_engine=False)
            else:
                self.fail_task(task, "EngineError", why.format(task.msg_id))

    def _maybe_close_recovery(self) -> None:
        if self.returning or self.resyncing or self.engines.expected:
            return
        self._release_requeue()
        if self.recovering:
            return
        self.recovery_open = False
        if self.job_check is not None:
            self.job_check.stop()
        log.info("restore complete: every engine of the old controller is back or given up")
        self._release_direct()
        if self.orphan_watch:  # what no engine returned and the client does not send again
            self.orphans_fail_at = time.monotonic() + ORPHAN_GRACE

    def _fail_orphans(self) -> None:
        for mid, ident in list(self.orphan_watch.items()):
            task = Task(ident, mid, "apply_reply", None, False, {})
            self.fail_task(task, "EngineError", f"the controller died before it recorded task {mid}, and no "
                           "engine returned its result after the restore; resubmit it")
        self.orphan_watch.clear()
        self.orphans.clear()
