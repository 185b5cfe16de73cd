"""The hub: every task's record, written off the hot path.

The controller's loop only puts small tuples on a queue; a store thread
writes them to the task database (taskdb.py) in batches and answers
clients' queries. Answers go back to the loop through an in-process pipe,
so the loop never waits on the database.

Records are not worth a thread wake-up each: the store thread wakes for the
first record of a batch, then sleeps COMMIT_EVERY while more pile up, so a
busy controller wakes it (and hands it the GIL) about 20 times a second,
not twice per task. Queries and dependency look-ups cut the sleep short.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from .. import wire
from . import heap
from .taskdb import (
    BUFFER_KEYS,
    SHARED_REF,
    STREAM_KEYS,
    QueryError,
    check_query,
    meta_summary,
    stored_time,
)
from .taskrecord import result_fields

log = logging.getLogger("hpcpar.controller.hub")

COMMIT_EVERY = 0.05  # seconds: batch writes into one transaction
# The store thread gives the GIL away every few records: a batch is ~50-100 records
# of about 50 us each, and while it runs the loop thread, woken by a reply, would
# otherwise wait for the GIL until the batch is done (apply_sync p99 4.5-5.2 ms
# against 2.1-2.3 ms with the yield, on a 2-core machine).
YIELD_EVERY = 4
TRIM_AFTER = 2000  # records written before an idle hub gives freed heap back to the OS (heap.py)


def _nbytes(frames: list[Any]) -> int:
    return sum(len(f) for f in frames)


def payload_bytes(frames: list[Any] | None) -> int:
    """What a queued operation holds in memory (payload and buffers), for the loop's flow control."""
    return sum(len(f) for f in frames[3:]) if frames else 0


def _storable(header: dict[str, Any], frames: list[Any] | None, limit: int) -> bool:
    """Not too large, and not pointing at shared-memory files (they are removed once delivered)."""
    return frames is not None and not header.get("shm") and _nbytes(frames) <= limit


def _header_bytes(frames: list[Any] | None) -> bytes | None:
    """A message's header frame (JSON), kept for the record's ``header``/``result_header``."""
    return _as_bytes(frames[1:2])[0] if frames is not None and len(frames) > 1 else None


def _meta_bytes(frames: list[Any] | None, limit: int) -> bytes | None:
    """A message's meta frame (JSON), kept for the record's content/result_content/error...
    (not when larger than ``limit``: a reply's meta holds its output)."""
    if frames is None or len(frames) < 3 or len(frames[2]) > limit:
        return None
    return _as_bytes(frames[2:3])[0]


def _as_bytes(frames: list[Any]) -> list[bytes]:
    # Small frames arrive as bytes already (wire.drain): no failed hasattr for them.
    return [f if type(f) is bytes else f.bytes if hasattr(f, "bytes") else bytes(f) for f in frames]


class Hub:
    def __init__(self, backend: Any, signer: wire.Signer, ctx: zmq.Context, pipe_url: str,
                 store_limit: int = 8 << 20) -> None:
        self.backend = backend
        self.signer = signer
        self.store_limit = store_limit  # larger requests/results are not stored (they still reach the client)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self._urgent = threading.Event()  # set with every op that someone waits for
        self.pipe_url = pipe_url
        self.ctx = ctx
        self.submitted_count = 0
        self.finished_count = 0
        self.committed_finished = 0  # finished ops committed to disk (store thread): engines' stored_ack
        # Records submitted in the current batch, written at its end: a task that also
        # finished (or was assigned) within the batch becomes one INSERT instead of an
        # INSERT and an UPDATE of the same row. Store thread only.
        self._new: dict[str, dict[str, Any]] = {}
        self._dask: Any = None  # a dask.distributed scheduler, after become_dask (bridges/dask_workers.py)
        # Bytes of requests/replies handed to the store thread, and those it is done with: the
        # controller stops reading its sockets while the difference is large (Controller._loop).
        self.queued_bytes = 0  # written by the controller's thread only
        self.stored_bytes = 0  # written by the store thread only
        self.thread = threading.Thread(target=self._run, name="hpcpar-hub-store", daemon=True)
        self.thread.start()

    # -- called from the controller's loop: cheap ---------------------------------

    def submitted(self, msg_id: str, header: dict[str, Any], frames: list[Any] | None, engine_id: int | None) -> None:
        self.submitted_count += 1
        self.queued_bytes += payload_bytes(frames)
        self.queue.put(("submitted", msg_id, header, frames, engine_id))

    def submitted_many(self, ids: list[tuple[str, int]], header: dict[str, Any], frames: list[Any]) -> None:
        """One request for several engines (a broadcast): one queue entry, one copy of the frames."""
        self.submitted_count += len(ids)
        self.queued_bytes += payload_bytes(frames)
        self.queue.put(("submitted_many", ids, header, frames))

    def assigned(self, msg_id: str, engine_id: int, attempt: int) -> None:
        self.queue.put(("assigned", msg_id, engine_id, attempt))

    def finished(self, msg_id: str, header: dict[str, Any], frames: list[Any] | None, keep: bool = False,
                 recovered: bool = False) -> None:
        """``keep``: store the reply whatever its size (its client could not take it now).
        ``recovered``: a reply replayed after --restore (recovery.py): its record is created if
        the crash lost it, and a completed record is left as it is."""
        self.finished_count += 1
        self.queued_bytes += payload_bytes(frames)
        self.queue.put(("finished", msg_id, header, frames, time.time(), keep, recovered))

    def look_up(self, msg_ids: list[str]) -> None:
        """Ask for finished tasks' outcomes (dependencies older than the controller remembers)."""
        self.queue.put(("look_up", msg_ids))
        self._urgent.set()

    def request(self, ident: bytes, msg: wire.Message, extra: dict[str, Any] | None = None) -> None:
        self.queue.put(("request", ident, msg.msg_type, msg.msg_id, msg.meta, extra or {}))
        self._urgent.set()

    def totals(self) -> dict[str, int]:
        return {"submitted": self.submitted_count, "finished": self.finished_count}

    def close(self) -> None:
        self.queue.put(None)
        self._urgent.set()
        self.thread.join(timeout=10)
        if self._dask is not None:
            self._dask.stop()

    # -- the store thread ------------------------------------------------------------

    def _run(self) -> None:
        self.pipe = self.ctx.socket(zmq.PAIR)
        self.pipe.connect(self.pipe_url)
        get, urgent = self.queue.get, self._urgent
        written = 0  # operations since the heap was last trimmed
        finished_done = 0
        running = True
        while running:
            try:  # sleep until there is work (after a burst, only briefly: see below)
                ops = [get(timeout=COMMIT_EVERY if written >= TRIM_AFTER else None)]
            except queue.Empty:
                # Idle after a burst: off the loop's path, and the burst's memory is free.
                heap.release()
                written = 0
                continue
            if not urgent.is_set():
                urgent.wait(COMMIT_EVERY)  # let a batch build up, unless someone waits
            urgent.clear()
            while True:
                try:
                    ops.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            for done, op in enumerate(ops):
                if done and done % YIELD_EVERY == 0:
                    time.sleep(0)  # hand the GIL to the loop if it waits (see YIELD_EVERY)
                if op is None:
                    running = False
                    break
                try:
                    self._apply(op)
                    written += 1
                except Exception:
                    log.exception("task database operation %s failed", op[0])
                if op[0] in ("submitted", "submitted_many", "finished"):
                    self.stored_bytes += payload_bytes(op[3])
                    finished_done += op[0] == "finished"
            self._flush()
            try:
                self.backend.commit()
                self.committed_finished = finished_done  # engines may now forget these replies
            except Exception:
                log.exception("task database commit failed")
        self.backend.close()
        self.pipe.close(linger=500)

    def _flush(self) -> None:
        """Write the records held back in this batch (see ``_new``), in submission order."""
        for done, rec in enumerate(self._new.values()):
            if done and done % YIELD_EVERY == 0:
                time.sleep(0)  # as in _run: the loop thread may wait for the GIL
            try:
                self.backend.add(rec)
            except Exception:
                log.exception("task database write of %s failed", rec.get("msg_id"))
        self._new.clear()

    def _update(self, msg_id: str, fields: dict[str, Any]) -> None:
        rec = self._new.get(msg_id)
        if rec is None:
            self.backend.update(msg_id, fields)
        else:
            rec.update(fields)

    def _apply(self, op: tuple) -> None:
        kind = op[0]
        if kind in ("look_up", "request"):
            self._flush()  # queries see every record queued before them
        if kind == "submitted_many":
            _, ids, header, frames = op
            request = _as_bytes(frames) if _storable(header, frames, self.store_limit) else None
            head = _header_bytes(frames)
            meta = _meta_bytes(frames, self.store_limit)
            # One stored copy of the request for all the engines (taskdb.SHARED_REF).
            ref = (header.get("msg_id") or ids[0][0]) if request is not None and len(ids) > 1 else None
            for msg_id, engine_id in ids:
                self._add(msg_id, header, engine_id, request, head, meta)
                if ref is not None:
                    self._new[msg_id][SHARED_REF] = ref
        elif kind == "submitted":
            _, msg_id, header, frames, engine_id = op
            request = _as_bytes(frames) if _storable(header, frames, self.store_limit) else None
            self._add(msg_id, header, engine_id, request, _header_bytes(frames), _meta_bytes(frames, self.store_limit))
        elif kind == "look_up":
            found: dict[str, Any] = {}
            for msg_id in op[1]:
                rec = self.backend.get(msg_id)
                done = rec is not None and rec.get("completed") is not None
                found[msg_id] = [rec.get("status") == "ok", rec.get("engine_id")] if done else None
            self._send(b"looked-up", b"", json.dumps(found).encode())
        elif kind == "assigned":
            _, msg_id, engine_id, attempt = op
            self._update(msg_id, {"engine_id": engine_id, "status": "pending", "attempts": attempt})
        elif kind == "finished":
            _, msg_id, header, frames, received, keep, recovered = op
            if recovered and self._recovered_done(msg_id, header):
                return
            fields = {
                "started": stored_time(header.get("started")),
                "completed": stored_time(header.get("completed")),
                "received": stored_time(received),
                "status": header.get("status", "ok"),
            }
            if header.get("engine_id") is not None:
                fields["engine_id"] = header["engine_id"]
            if frames is not None:
                meta = _as_bytes(frames[2:3])[0]
                fields.update(meta_summary(meta))
                fields["result_header"] = _header_bytes(frames)
                if len(meta) <= self.store_limit:
                    fields["result_meta"] = meta
                if (keep and not header.get("shm")) or _storable(header, frames, self.store_limit):
                    fields["reply"] = _as_bytes(frames)
            self._update(msg_id, fields)
        elif kind == "request":
            _, ident, msg_type, parent, meta, extra = op
            handler: Callable | None = getattr(self, "_on_" + msg_type, None)
            try:
                if handler is None:
                    raise QueryError(f"the hub does not answer {msg_type!r}")
                handler(ident, parent, meta, extra)
            except (QueryError, ValueError, TypeError, KeyError) as e:
                self._reply(ident, "error_reply", parent, {"status": "error", "ename": type(e).__name__,
                                                           "evalue": str(e)})

    def _recovered_done(self, msg_id: str, header: dict[str, Any]) -> bool:
        """A replayed reply (recovery.py): True if its record is complete already; creates a lost one."""
        if msg_id in self._new:
            return self._new[msg_id].get("completed") is not None
        rec = self.backend.get(msg_id)
        if rec is None:
            method = str(header.get("msg_type") or "apply_reply").removesuffix("_reply")
            self._add(msg_id, {"session": header.get("client"), "msg_type": method + "_request",
                               "date": header.get("started")}, header.get("engine_id"), None)
            return False
        return rec.get("completed") is not None

    def _add(self, msg_id: str, header: dict[str, Any], engine_id: int | None, request: list[bytes] | None,
             head: bytes | None = None, meta: bytes | None = None) -> None:
        rec = {
            "msg_id": msg_id,
            "session": header.get("session"),
            "msg_type": header.get("msg_type"),
            "label": header.get("label"),
            "fname": header.get("fname"),
            "submitted": stored_time(header.get("date")),
            "engine_id": engine_id,
            "status": "pending" if engine_id is not None else "queued",
            "attempts": 0,
        }
        if request is not None:
            rec["request"] = request
        if head is not None:
            rec["header"] = head
        if meta is not None:
            rec["request_meta"] = meta
        if header.get("resubmitted"):  # the old record names its resubmission, as in ipyparallel
            self._update(header["resubmitted"], {"resubmitted": msg_id})
        self._new.pop(msg_id, None)  # a replaced record moves to the end, as INSERT OR REPLACE does
        self._new[msg_id] = rec

    def _send(self, *frames: Any) -> None:
        self.pipe.send_multipart(list(frames), copy=False)

    def _reply(self, ident: bytes, msg_type: str, parent: str, meta: dict[str, Any]) -> None:
        header = self.signer.header(msg_type, parent=parent)
        self._send(b"client", ident, *self.signer.pack(header, meta))

    # -- queries ----------------------------------------------------------------------

    def _on_db_query_request(self, ident: bytes, parent: str, meta: dict[str, Any], extra: dict) -> None:
        query, keys = meta.get("query") or {}, meta.get("keys")
        check_query(query, keys)
        if keys and any(k in ("request", "reply") for k in keys):
            raise QueryError("db_query returns record fields; fetch results with get_result(msg_ids)")
        records = self.backend.find(query, keys)
        frames: list[bytes] = []
        for rec in records:  # buffers travel as frames; the record names their positions
            for k in BUFFER_KEYS:
                if k in rec:
                    data, rec[k] = rec[k], list(range(len(frames), len(frames) + len(rec[k])))
                    frames.extend(data)
        header = self.signer.header("db_query_reply", parent=parent)
        self._send(b"client", ident, *self.signer.pack(header, {"records": records}, b"", frames))

    def _on_task_stream_request(self, ident: bytes, parent: str, meta: dict[str, Any], extra: dict) -> None:
        """Tasks received in [since, until), the newest ``limit`` of them, as rows of STREAM_KEYS:
        what the dashboard polls twice a second, so without a dict or key names per task."""
        try:
            since, until, limit = float(meta["since"]), float(meta["until"]), int(meta.get("limit", 1000))
        except (KeyError, TypeError, ValueError):
            raise QueryError("task_stream_request needs 'since' and 'until' (epoch seconds) and an int 'limit'") from None
        if limit < 1:
            raise QueryError(f"task_stream_request: limit must be at least 1, not {limit}")
        self._reply(ident, "task_stream_reply", parent,
                    {"keys": list(STREAM_KEYS), "rows": self.backend.stream(since, until, limit)})

    def _on_result_request(self, ident: bytes, parent: str, meta: dict[str, Any], extra: dict) -> None:
        """Send each stored reply as it was signed by the engine, then a summary with each
        known task's record times (so a fetched result has its ``submitted`` time, and more)."""
        found, missing, unstored, watch = [], [], [], []
        records: dict[str, dict[str, Any]] = {}
        pending = extra.get("pending", ())
        for msg_id in meta.get("msg_ids", []):
            rec = self.backend.get(msg_id)
            if rec is not None:
                records[msg_id] = result_fields(rec)
            if msg_id in pending:
                continue
            if rec is None and extra.get("watch_missing"):
                watch.append(msg_id)  # after --restore an engine may still hold it (recovery.py)
            elif rec is None:
                missing.append(msg_id)
            elif not rec.get("reply"):
                unstored.append(msg_id)
            else:
                self._send(b"client", ident, *rec["reply"])
                found.append(msg_id)
        if watch:
            self._send(b"watch", ident, json.dumps(watch).encode())
        self._reply(ident, "result_reply", parent, {"found": found, "missing": missing, "unstored": unstored,
                                                    "pending": [*pending, *watch], "unrecorded": watch,
                                                    "records": records})

    _on_resync_request = _on_result_request  # a reconnected client catching up

    def _on_result_status_request(self, ident: bytes, parent: str, meta: dict[str, Any], extra: dict) -> None:
        pending = set(extra.get("pending", ()))
        completed, unknown = [], []
        for msg_id in meta.get("msg_ids", []):
            if msg_id in pending:
                continue
            rec = self.backend.get(msg_id)
            (completed if rec is not None and rec.get("completed") is not None else unknown).append(msg_id)
        self._reply(ident, "result_status_reply", parent,
                    {"pending": sorted(pending), "completed": completed, "unknown": unknown})

    def _on_hub_history_request(self, ident: bytes, parent: str, meta: dict[str, Any], extra: dict) -> None:
        self._reply(ident, "hub_history_reply", parent, {"history": self.backend.history()})

    def _on_purge_request(self, ident: bytes, parent: str, meta: dict[str, Any], extra: dict) -> None:
        pending = list(extra.get("pending", ()))
        query: dict[str, Any] = {"msg_id": {"$nin": pending}, "completed": {"$exists": True}}
        if not meta.get("all"):
            if meta.get("msg_ids") is not None:
                query["msg_id"] = {"$in": [m for m in meta["msg_ids"] if m not in pending]}
            if meta.get("targets") is not None:
                query["engine_id"] = {"$in": meta["targets"]}
            if meta.get("msg_ids") is None and meta.get("targets") is None:
                raise QueryError("purge_hub_results needs jobs, targets, or 'all'")
        self._reply(ident, "purge_reply", parent, {"purged": self.backend.delete(query)})

    def _on_resubmit_request(self, ident: bytes, parent: str, meta: dict[str, Any], extra: dict) -> None:
        """Hand stored requests back to the loop, which re-signs them under new msg_ids."""
        missing = []
        for msg_id in meta.get("msg_ids", []):
            rec = self.backend.get(msg_id)
            if rec is None or not rec.get("request"):
                missing.append(msg_id)
                continue
            info = {"old": msg_id, "engine_id": rec.get("engine_id")}
            self._send(b"resubmit", ident, parent.encode(), json.dumps(info).encode(), *rec["request"])
        self._send(b"resubmit-done", ident, parent.encode(), json.dumps({"missing": missing}).encode())

    # -- dask.distributed (become_dask) ------------------------------------------------------

    def _on_become_dask_request(self, ident: bytes, parent: str, meta: dict[str, Any], extra: dict) -> None:
        """Start a dask scheduler here (once), where every engine can reach it, as ipyparallel does."""
        from ..bridges import dask_workers

        if self._dask is None:
            host = extra.get("host")
            try:
                self._dask = dask_workers.start_scheduler(None if host in ("*", "0.0.0.0", "") else host,
                                                          int(meta.get("port") or 0), meta.get("scheduler_args"))
            except Exception as e:  # ImportError included: the client is told why
                raise QueryError(f"{type(e).__name__}: {e}") from None
        self._reply(ident, "become_dask_reply", parent, dask_workers.scheduler_info(self._dask))

    def _on_stop_distributed_request(self, ident: bytes, parent: str, meta: dict[str, Any], extra: dict) -> None:
        if self._dask is not None:
            self._dask.stop()
            self._dask = None
        self._reply(ident, "stop_distributed_reply", parent, {"status": "ok"})
