"""What a client asks the hub: results of any task, the task database, resubmit, purge.

A mixin of Client: these requests are answered by the controller's hub (its
store thread), not by engines.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..controller.taskdb import DATE_KEYS, check_query, normalize_query
from ..error import remote_error
from ..redeliver import resigned
from .asyncresult import AsyncResult, Metadata, _ts
from .channel import ConnectionRejected

log = logging.getLogger("hpcpar.client")


class AsyncHubResult(AsyncResult):
    """Results of tasks this client did not submit (or no longer holds), fetched from the
    hub: those still running arrive when they finish. Metadata comes from the hub's
    records (``submitted`` included, so ``elapsed`` and ``wall_time`` are right)."""


class HubQueries:
    """Client methods backed by the hub's task records (see docs/tasks.md)."""

    def get_result(self, indices_or_msg_ids: Any = None, block: bool | None = None,
                   owner: bool = True) -> AsyncResult:
        """An AsyncResult for earlier tasks: this client's (an AsyncResult), or any client's
        (an AsyncHubResult, fetched from the hub); ``block`` waits for it first. With ``owner`` (the default, as in
        ipyparallel) results fetched from the hub are dropped from this client's caches once
        the AsyncResult has them; results of tasks this client submitted stay."""
        msg_ids = self._msg_ids_of(indices_or_msg_ids if indices_or_msg_ids is not None else -1)
        foreign = []
        with self._lock:
            for mid in msg_ids:
                if mid not in self.outstanding and mid not in self.results and mid not in self._replies:
                    foreign.append(mid)
                    self.outstanding.add(mid)  # until the hub's reply (or its absence) is known
                    self.metadata.setdefault(mid, Metadata(msg_id=mid))
        jobs = indices_or_msg_ids
        # One id gives its result; a list gives a list (of one, for a list of one), as in ipyparallel.
        single = jobs is None or isinstance(jobs, (str, int)) or (
            isinstance(jobs, AsyncResult) and jobs._single_result)
        cls = AsyncHubResult if foreign else AsyncResult
        ar = cls(self, msg_ids, fname="get_result", owner=owner, single=single and len(msg_ids) == 1)
        ar._owned = set(foreign) if owner else set()
        ar._attach()
        if foreign:
            self._fetch(foreign)
        if self.block if block is None else block:
            ar.wait()  # and still return the AsyncResult, as ipyparallel does
        return ar

    def _fetch(self, msg_ids: list[str], kind: str = "result_request") -> None:
        """Ask the hub for stored replies; pending ones arrive when they finish."""
        reply = self._request(kind, {"msg_ids": msg_ids})
        missing = list(reply.meta.get("missing", []))
        if kind == "resync_request":  # a restored controller that lost these requests: send them again
            missing = self._resend_lost(missing, list(reply.meta.get("unrecorded", [])))
        problems = {m: f"no task {m} in the hub's records (purged, or from another cluster)" for m in missing}
        problems.update({m: f"the result of {m} was too large to be stored by the hub (or went through "
                            "shared memory); only the client that submitted it received it" for m in reply.meta.get("unstored", [])})
        for mid, why in problems.items():
            # As in ipyparallel: a RemoteError named KeyError (also a KeyError here).
            self._fail_locally(mid, remote_error("KeyError", why))
        self._apply_records(reply.meta.get("records") or {})

    def _apply_records(self, records: dict[str, dict[str, Any]]) -> None:
        """Metadata of fetched results from the hub's records (times as datetimes)."""
        with self._lock:
            for mid, rec in records.items():
                md = self.metadata.get(mid)
                if md is None:
                    continue
                for key, value in rec.items():
                    if value is None:
                        continue
                    md[key] = _ts(value) if key in DATE_KEYS else value

    def _resend_lost(self, missing: list[str], unrecorded: list[str]) -> list[str]:
        """Send again the requests the hub does not know (client/resend.py); the ids still missing."""
        requests, covered = self._sent.to_resend(missing + unrecorded)
        for frames in requests:
            self._send(resigned(self._signer, frames))
        if covered:
            log.warning("sent %d request(s) again: the restored controller had not recorded them", len(requests))
        done = set(covered)
        return [m for m in missing if m not in done]

    def _fail_locally(self, msg_id: str, error: BaseException) -> None:
        self._sent.done(msg_id)
        with self._cond:
            if msg_id not in self.outstanding:
                return
            self.results[msg_id] = error
            self.outstanding.discard(msg_id)
            waiting = self._pending.pop(msg_id, ())
            self._cond.notify_all()
        for ar in waiting:
            ar._msg_done(msg_id)

    def _resync(self) -> None:
        """After a reconnect (maybe a restarted controller): refresh the engine
        list and ask for any result we may have missed."""
        try:
            # The reply's engine list is applied as it arrives (Client._on_frames).
            self._request("connect_request", {}, first=True)
        except ConnectionRejected:
            return  # reported once (Channel._on_rejected); every waiting call has failed with it
        except Exception:
            log.exception("could not refresh the engine list after reconnecting")
        with self._lock:
            missing = [m for m in self.outstanding]
        if missing:
            try:
                self._fetch(missing, "resync_request")
            except Exception:
                log.exception("could not resync with the controller")

    def result_status(self, msg_ids: Any, status_only: bool = True) -> dict[str, Any]:
        """{'pending': [...], 'completed': [...]} for these tasks, as the hub knows them."""
        ids = self._msg_ids_of(msg_ids)
        status = self._request("result_status_request", {"msg_ids": ids}).meta
        if status.get("unknown"):
            raise remote_error("KeyError", f"no such task(s) {status['unknown']} in the hub's records "
                                           "(purged, never submitted, or from another cluster)")
        out = {"pending": status["pending"], "completed": status["completed"]}
        if not status_only and status["completed"]:
            # The results, which stay in this client's cache (as ipyparallel's result_status keeps them).
            values = self.get_result(list(status["completed"]), owner=False).get()
            out.update(zip(status["completed"], values))
        return out

    def db_query(self, query: dict[str, Any], keys: list[str] | None = None) -> list[dict[str, Any]]:
        """Task records matching a MongoDB-style query, e.g. {'engine_id': 0,
        'completed': {'$gt': t}, 'label': {'$glob': 'step-*'}}. Times are
        timezone-aware datetimes; compare them with datetimes (naive ones are local time)
        or epoch seconds."""
        if isinstance(keys, str):  # one key, as ipyparallel accepts it
            keys = [keys]
        check_query(query, keys)
        # Times travel as epoch seconds: converted here, where a naive datetime's local time is known.
        reply = self._request("db_query_request", {"query": normalize_query(query), "keys": keys})
        if reply.msg_type == "error_reply":
            raise ValueError(reply.meta.get("evalue"))
        records = reply.meta["records"]
        for rec in records:
            for key in ("buffers", "result_buffers"):  # indices into the reply's frames (hub.py)
                if isinstance(rec.get(key), list):
                    rec[key] = [bytes(reply.buffers[i]) for i in rec[key]]
            for key in DATE_KEYS:
                if isinstance(rec.get(key), (int, float)):
                    rec[key] = _ts(rec[key])
            for key in ("header", "result_header", "result_metadata"):  # their times as datetimes
                head = rec.get(key)
                if isinstance(head, dict):
                    for k in ("date", "started", "completed"):
                        if isinstance(head.get(k), (int, float)):
                            head[k] = _ts(head[k])
        return records

    def hub_history(self) -> list[str]:
        """msg_ids of every task the hub has a record of, oldest first."""
        return self._request("hub_history_request", {}).meta["history"]

    def resubmit(self, indices_or_msg_ids: Any, block: bool | None = None) -> AsyncResult:
        """Run finished tasks again (from the hub's stored requests) under new msg_ids."""
        old = self._msg_ids_of(indices_or_msg_ids)
        sent = _ts(time.time())
        # Replies to the new tasks may arrive before this answer; they wait in _replies.
        reply = self._request("resubmit_request", {"msg_ids": old})
        if reply.meta.get("missing"):
            raise remote_error("KeyError", f"cannot resubmit {reply.meta['missing']}: the hub has no stored "
                                           "request for them (purged, too large to store, or --db none)")
        mapping = reply.meta["mapping"]
        new = [mapping[m] for m in old if m in mapping]
        with self._lock:
            for mid in new:
                self.metadata.setdefault(mid, Metadata(msg_id=mid, submitted=sent))
                self.history.append(mid)
                if mid not in self._replies:
                    self.outstanding.add(mid)
        # A list of new msg_ids, so get() gives a list even for one task, as in ipyparallel;
        # blocking waits and still returns the AsyncHubResult.
        ar = AsyncHubResult(self, new, fname="resubmit", single=False)._attach()
        if self.block if block is None else block:
            ar.wait()
        return ar

    def purge_hub_results(self, jobs: Any = (), targets: Any = ()) -> int:
        """Delete finished tasks' records at the hub ('all' for everything finished)."""
        meta: dict[str, Any] = {"all": jobs == "all"}
        if jobs and jobs != "all":
            meta["msg_ids"] = self._msg_ids_of(list(jobs) if not isinstance(jobs, (str, AsyncResult)) else jobs)
        if targets:
            meta["targets"] = self._build_targets(targets)
        return self._request("purge_request", meta).meta["purged"]

    def purge_results(self, jobs: Any = (), targets: Any = ()) -> None:
        """Forget finished results here and at the hub."""
        self.purge_local_results(jobs, targets)
        self.purge_hub_results(jobs, targets)

    def purge_everything(self) -> None:
        self.purge_results("all")
        with self._lock:
            self.history = [m for m in self.history if m in self.outstanding]
