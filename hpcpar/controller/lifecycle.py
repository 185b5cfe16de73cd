"""Engine lifecycle: registration, heartbeats (direct and through forwarders),
death, re-attach after a controller restart (--restore), shutdown.

A mixin of Controller (app.py): its methods run on the controller's loop.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import zmq

from .. import security, wire
from ..connection import ConnectionFileError, ConnectionInfo
from ..forwarding import relay
from .engines import EngineRecord

log = logging.getLogger("hpcpar.controller")

PING_EVERY = 3.0  # seconds between heartbeat replies to one engine


class EngineLifecycle:
    def _load_previous_connection(self) -> None:
        """--restore: same key and ports, so surviving engines and clients reconnect by themselves."""
        c = self.config
        try:
            client = ConnectionInfo.load(c.profile_dir.client_file(c.cluster_id))
            engine = ConnectionInfo.load(c.profile_dir.engine_file(c.cluster_id))
        except ConnectionFileError as e:
            raise SystemExit(f"cannot restore: {e}") from None
        c.key = client.key
        c.transport = client.transport  # surviving engines and clients hold keys for this mode
        if client.transport == "curve":
            try:
                c.curve_keys = security.load_keys(c.profile_dir.controller_key_file(c.cluster_id))
            except (OSError, ValueError, TypeError) as e:
                raise SystemExit(f"cannot restore: the controller's Curve keys are unreadable ({e}); "
                                 "start afresh with 'hpcpar start'") from None
        c.port = c.port or int(client.urls[0].rsplit(":", 1)[1])
        c.engine_port = c.engine_port or int(engine.urls[0].rsplit(":", 1)[1])

    # The engines of this controller, for --restore: a snapshot (engines.json, rewritten a few
    # times a second when it changed) plus an append-only journal of registrations since then,
    # written at once, so an engine a client has seen is on disk even if the controller is
    # SIGKILLed before the next snapshot.

    @property
    def _engines_journal(self) -> Path:
        return self.config.engines_path.with_suffix(".journal")

    def _restore_state(self, backend: Any) -> None:
        try:
            known = json.loads(self.config.engines_path.read_text())
        except (OSError, ValueError):
            known = {}
        engines = {uuid: int(eid) for uuid, eid in known.get("engines", {}).items()}
        procs = {uuid: (int(p[0]), int(p[1])) for uuid, p in (known.get("procs") or {}).items()}
        jobs = {uuid: str(j) for uuid, j in (known.get("jobs") or {}).items()}
        next_id = int(known.get("next_id", 0))
        try:
            journal = self._engines_journal.read_text().splitlines()
        except OSError:
            journal = []
        for line in journal:
            try:
                uuid, eid, *rest = line.split(" ")
                engines[uuid] = int(eid)
                proc = [p for p in rest if not p.startswith("job=")]
                if len(proc) == 2:
                    procs[uuid] = (int(proc[0]), int(proc[1]))
                job = next((p[4:] for p in rest if p.startswith("job=") and p[4:]), None)
                if job:
                    jobs[uuid] = job
            except ValueError:
                continue  # a line cut short by the crash
            next_id = max(next_id, int(eid) + 1)
        self.engines.expect(engines, next_id)
        # Engines on this host whose process is known: recovery.py sees at once if one died too.
        self.expected_procs = {engines[u]: p for u, p in procs.items() if u in engines}
        # Engines of batch jobs elsewhere: the batch system says at once if the job is gone (recovery.py).
        self.watch_jobs({engines[u]: j for u, j in jobs.items() if u in engines and engines[u] not in self.expected_procs})
        self.restore_tasks(backend)  # recovery.py

    def _local_process(self, rec: EngineRecord) -> tuple[int, int] | None:
        """(pid, start time) of an engine process on this host, to tell after a restore whether
        it died with the controller; None elsewhere (or for what is not an hpcpar process here)."""
        from ..launchers.process import process_start_time

        pid = rec.info.get("pid")
        if rec.info.get("hostname") != socket.gethostname() or type(pid) is not int:
            return None
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"hpcpar" not in f.read():
                    return None  # another pid namespace, or a pid we cannot see
        except OSError:
            return None
        start = process_start_time(pid)
        return None if start is None else (pid, start)

    def _journal_engine(self, rec: EngineRecord) -> None:
        proc = rec.proc = self._local_process(rec)
        try:
            with open(self._engines_journal, "a") as f:
                job = f" job={_job_of(rec)}" if _job_of(rec) else ""
                f.write(f"{rec.uuid} {rec.id}" + (f" {proc[0]} {proc[1]}" if proc else "") + job + "\n")
        except OSError as e:
            log.warning("cannot record engine %d for --restore in %s: %s", rec.id, self._engines_journal, e)

    def _save_engines(self) -> None:
        data: dict[str, Any] = {"engines": {e.uuid: e.id for e in self.engines.by_id.values()},
                                "next_id": self.engines.next_id}
        data["procs"] = {e.uuid: list(e.proc) for e in self.engines.by_id.values() if e.proc is not None}
        data["jobs"] = {e.uuid: _job_of(e) for e in self.engines.by_id.values() if _job_of(e)}
        tmp = self.config.engines_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.config.engines_path)
        self._engines_journal.unlink(missing_ok=True)  # the snapshot holds what it recorded
        self._engines_dirty = False


    def handle_engine(self, frames: list[Any]) -> None:
        # ``path``: the forwarders the message came through (empty for a direct engine);
        # a forwarder's batch carries several engines' replies.
        path, messages = relay.unwrap(frames)
        if len(messages) > 1:
            self.forwarding.batched_replies += len(messages)
        for ident, signed in messages:
            try:
                self._engine_message(path, ident, signed)
            except Exception:
                log.exception("error handling a message from an engine; dropped")

    def _engine_message(self, path: tuple[bytes, ...], ident: bytes, signed: list[Any]) -> None:
        if len(signed) == 3 and relay.is_mark(signed[0], wire.REFUSED):
            self.on_engine_refused(ident, signed[1], signed[2])  # unsigned: checked there (routing.py)
            return
        try:
            msg = self.signer.unpack(signed, check_buffers=False)  # the client verifies a reply's buffers
        except wire.BadMessage as e:
            log.warning("dropped a message from an engine (%s)", e)
            if not path:
                self._tell_unauthenticated("engine", ident, str(e))
            return
        if not self.replay.fresh(msg.header):
            return  # a replay (or far too old): dropped, logged once per sender
        mt = msg.msg_type
        if mt == "register_request":
            self.forwarding.remember(ident, path)
            self.on_register(ident, msg)
            return
        if mt == "work_hello":
            self.forwarding.remember(ident, path)
            self.on_work_hello(ident, msg)
            return
        if mt == "forwarder_hello":
            self.forwarding.hello(path, ident, msg.meta)
            self.forwarding.send(relay.SELF, self.signer.pack(self.signer.header("forwarder_hello_reply")),
                                 (*path, ident))
            return
        if mt == "heartbeat_batch":
            self.on_heartbeat_batch((*path, ident), msg)
            return
        rec = self.engines.lookup(ident)
        if rec is None:
            # An engine we do not know (we restarted, or declared it dead):
            # ask it to register again rather than trusting its old id.
            self.forwarding.send(ident, self.signer.pack(self.signer.header("reregister_request")), path)
            return
        now = rec.last_seen = time.monotonic()
        if mt == "heartbeat":
            # Engines only need to hear from us now and then (their controller_timeout is
            # a minute by default): answer every few seconds, not every beat, with frames
            # signed once a second for everyone.
            if now - rec.last_ping_sent >= PING_EVERY:
                rec.last_ping_sent = now
                self.forwarding.send(ident, self._ping_frames(now))
        elif mt.endswith("_reply"):
            self.on_engine_reply(rec, msg)
            self.note_reply(rec, msg.header.get("parent"))  # stored_ack once committed (recovery.py)
        elif mt == "resync_answer":
            self.on_resync_answer(rec, msg)
        elif mt in ("stream", "display_data"):
            task = self.tasks.get(msg.header.get("parent"))
            if task is not None:
                for client in [task.client, *task.watchers]:
                    self.to_client(client, msg.frames)
        elif mt == "unregister_request":
            self.unregister(rec, "shut down" + self._walltime_note(rec))
            # The engine waits for this before it exits: its id is free now, and it must
            # not answer a reregister_request its last heartbeat may still draw.
            self.forwarding.send(ident, self.signer.pack(self.signer.header("unregister_reply")), path)
        elif mt == "engine_status":
            rec.status, rec.status_at = dict(msg.meta), now
        elif mt == "engine_draining":
            rec.retiring = str(msg.meta.get("reason") or "retiring")
            log.info("engine %d is %s", rec.id, rec.retiring)
            self.retire_if_idle(rec)

    def on_heartbeat_batch(self, below: tuple[bytes, ...], msg: wire.Message) -> None:
        """A forwarder verified these engines' heartbeats (and answers them itself)."""
        now = time.monotonic()
        self.forwarding.seen(below)
        for name in msg.meta.get("engines") or []:
            ident = str(name).encode("latin-1")
            rec = self.engines.lookup(ident)
            if rec is None:  # as for a direct engine we do not know: ask it to register again
                self.forwarding.send(ident, self.signer.pack(self.signer.header("reregister_request")), below)
            else:
                rec.last_seen = now

    def _ping_frames(self, now: float) -> list[Any]:
        if now - self._ping_made > 1.0:
            self._ping = self.signer.pack(self.signer.header("heartbeat_reply"))
            self._ping_made = now
        return self._ping

    def on_register(self, ident: bytes, msg: wire.Message) -> None:
        m = msg.meta
        known = ident in self.engines.by_ident
        # An engine of the old controller: listed on disk, or (if the crash came before the
        # listing) saying it had an id, while a restore is open.
        returning = not known and (str(m.get("uuid", "")) in self.engines.expected
                                   or (self.recovery_open and bool(m.get("reattach"))))
        rec = self.engines.register(ident, str(m.get("uuid", "")), m.get("requested_id"), dict(m.get("info") or {}))
        if returning:
            self.engine_returning(rec)  # it keeps its work; recovery.py asks what it holds
        if not known:
            self._journal_engine(rec)
        reply = self.signer.header("register_reply", parent=msg.msg_id)
        self.forwarding.send(ident, self.signer.pack(reply, {
            "id": rec.id,
            "heartbeat_interval": self.config.heartbeat_interval,
            "heartbeat_timeout": self.config.heartbeat_timeout,
        }))
        if not known:
            self._engines_dirty = True

    def on_work_hello(self, ident: bytes, msg: wire.Message) -> None:
        """The engine's second socket, for requests and replies: now it may get work."""
        uuid = str(msg.meta.get("uuid", ""))
        rec = self.engines.by_ident.get(uuid.encode())  # engines name their control socket by uuid
        if rec is None or rec.uuid != uuid:
            rec = next((e for e in self.engines.by_id.values() if e.uuid == uuid), None)
        if rec is None:
            self.forwarding.send(ident, self.signer.pack(self.signer.header("reregister_request")))
            self.forwarding.forget(ident)
            return
        self.engines.set_work(rec, ident)
        # Its parent tells the engine which hello this answers: work before it is stale.
        self.forwarding.send(ident, self.signer.pack(self.signer.header("work_hello_reply", parent=msg.msg_id)))
        if not rec.ready:
            rec.ready = True
            log.info("engine %d registered (%s pid %s)", rec.id, rec.info.get("hostname"), rec.info.get("pid"))
            self.notify_clients("engine_registered", {"engine": rec.describe()})
            self.engine_back(rec)
            self.lb.schedule()


    def check_heartbeats(self, now: float) -> None:
        limit = self.config.heartbeat_timeout + max(0.0, self._bulk_until - now)
        for rec in list(self.engines.by_id.values()):
            if now - rec.last_seen > limit:
                self.engine_died(rec, f"no heartbeat for {now - rec.last_seen:.1f} s")

    @staticmethod
    def _walltime_note(rec: EngineRecord) -> str:
        """"; its batch job 812 reached its walltime" when that is why an engine went."""
        job_end = rec.info.get("job_end")
        if isinstance(job_end, (int, float)) and time.time() >= job_end - 30:
            return f"; its batch job {rec.info.get('job_id') or ''} reached its walltime".replace("job  ", "job ")
        return ""

    def engine_died(self, rec: EngineRecord, why: str) -> None:
        why += self._walltime_note(rec)
        log.warning("engine %d (%s pid %s) is lost: %s", rec.id, rec.info.get("hostname"), rec.info.get("pid"), why)
        path = self.forwarding.via.get(rec.ident, ())
        self.unregister(rec, f"died or became unreachable ({why})")
        # If it is only slow (stopped, swapping, starved), it must drop the work we
        # reported as failed; its next heartbeat then makes it register again.
        for mt in ("abort_request", "interrupt_request"):
            try:
                self.forwarding.send(rec.ident, self.signer.pack(self.signer.header(mt), {"msg_ids": None}), path)
            except zmq.ZMQError:
                pass

    def retire_if_idle(self, rec: EngineRecord) -> None:
        """A draining engine that holds no more work is told to leave (it exits at once)."""
        if rec.retiring is None or rec.outstanding:
            return
        self.to_engine(rec, self.signer.pack(self.signer.header("shutdown_request")), control=True)
        self.unregister(rec, rec.retiring.replace("retiring: ", "retired: ", 1))

    def unregister(self, rec: EngineRecord, why: str) -> None:
        if self.engines.by_id.get(rec.id) is not rec:
            return
        was_ready = rec.ready
        self.engines.remove(rec)
        self.forwarding.forget(rec.ident, rec.work_ident)
        self._engines_dirty = True
        name = f"engine {rec.id}"
        if rec.info.get("mpi_rank") is not None:
            name += f" (MPI rank {rec.info['mpi_rank']} of {rec.info.get('mpi_size')})"
        for mid, is_lb in list(rec.outstanding.items()):
            task = self.tasks.get(mid)
            if task is None:
                continue
            if is_lb and task.retries_left > 0:
                task.retries_left -= 1
                self.lb.retry(task, None, avoid_engine=False)
            else:
                self.fail_task(task, "EngineError", f"{name} {why} while holding task {mid}")
        rec.outstanding.clear()
        rec.lb_in_flight = 0
        if was_ready:
            self.notify_clients("engine_unregistered", {"engine": rec.describe(), "reason": why})
        self.lb.schedule()

    def _shutdown_engines(self) -> None:
        frames = self.signer.pack(self.signer.header("shutdown_request"), {"reason": "controller stopping"})
        for rec in list(self.engines.by_id.values()):
            try:
                self.forwarding.send(rec.ident, frames)
            except zmq.ZMQError:
                pass
        self.forwarding.to_forwarders(frames)  # after their engines' copies, on the same pipes
        for task in list(self.tasks.values()):
            self.fail_task(task, "EngineError", "the controller shut down before the task finished")
        self.notify_clients("controller_stopping", {})
        time.sleep(0.05)  # let the sockets flush what was just queued


def _job_of(rec: EngineRecord) -> str:
    """The batch job id the engine reported (its SLURM_JOB_ID, JOB_ID ...), "" outside a job."""
    return "".join(str(rec.info.get("job_id") or "").split())
