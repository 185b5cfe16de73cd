"""What a client asks the hub: results of any task, the task database, resubmit, purge.

A mixin of Client: these requests are answered by the controller's hub (its
store thread), not by engines.
"""

from __future__ import annotations

import logging
from typing import Any

from ..controller.taskdb import DATE_KEYS, check_query, normalize_query
from ..error import remote_error
from .asyncresult import AsyncResult, Metadata, _ts

log = logging.getLogger("hpcpar.client")


class HubQueries:
    """Client methods backed by the hub's task records (see docs/tasks.md)."""

    def get_result(self, indices_or_msg_ids: Any = None, block: bool | None = None, owner: bool = True) -> AsyncResult:
        """An AsyncResult for earlier tasks, including other clients' (fetched from the hub)."""
        msg_ids = self._msg_ids_of(indices_or_msg_ids if indices_or_msg_ids is not None else -1)
        ar = AsyncResult(self, msg_ids, fname="get_result")
        foreign = []
        with self._lock:
            for mid in msg_ids:
                if mid in self.outstanding:
                    self._pending.setdefault(mid, []).append(ar)
                elif mid in self.results or mid in self._replies:
                    pass
                else:
                    foreign.append(mid)
                    self.outstanding.add(mid)
                    self._pending.setdefault(mid, []).append(ar)
                    self.metadata.setdefault(mid, Metadata(msg_id=mid))
        for mid in msg_ids:
            if mid not in self.outstanding:
                ar._msg_done(mid)
        if foreign:
            self._fetch(foreign)
        if self.block if block is None else block:
            return ar.get()
        return ar

    def _fetch(self, msg_ids: list[str], kind: str = "result_request") -> None:
        """Ask the hub for stored replies; pending ones arrive when they finish."""
        reply = self._request(kind, {"msg_ids": msg_ids})
        problems = {m: f"no task {m} in the hub's records (purged, or from another cluster)"
                    for m in reply.meta.get("missing", [])}
        problems.update({m: f"the result of {m} was too large to be stored by the hub (or went through "
                            "shared memory); only the client that submitted it received it" for m in reply.meta.get("unstored", [])})
        for mid, why in problems.items():
            # As in ipyparallel: a RemoteError named KeyError (also a KeyError here).
            self._fail_locally(mid, remote_error("KeyError", why))

    def _fail_locally(self, msg_id: str, error: BaseException) -> None:
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
        if not status_only:
            out.update({m: v for m, v in zip(status["completed"], self.get_result(status["completed"]).get())}
                       if len(status["completed"]) > 1 else
                       {m: self.get_result(m).get() for m in status["completed"]})
        return out

    def db_query(self, query: dict[str, Any], keys: list[str] | None = None) -> list[dict[str, Any]]:
        """Task records matching a MongoDB-style query, e.g. {'engine_id': 0,
        'completed': {'$gt': t}, 'label': {'$glob': 'step-*'}}. Times are
        timezone-aware datetimes; compare them with datetimes (naive ones are local time)
        or epoch seconds."""
        check_query(query, keys)
        # Times travel as epoch seconds: converted here, where a naive datetime's local time is known.
        reply = self._request("db_query_request", {"query": normalize_query(query), "keys": keys})
        if reply.msg_type == "error_reply":
            raise ValueError(reply.meta.get("evalue"))
        records = reply.meta["records"]
        for rec in records:
            for key in DATE_KEYS:
                if isinstance(rec.get(key), (int, float)):
                    rec[key] = _ts(rec[key])
        return records

    def hub_history(self) -> list[str]:
        """msg_ids of every task the hub has a record of, oldest first."""
        return self._request("hub_history_request", {}).meta["history"]

    def resubmit(self, indices_or_msg_ids: Any, block: bool | None = None) -> AsyncResult:
        """Run finished tasks again (from the hub's stored requests) under new msg_ids."""
        old = self._msg_ids_of(indices_or_msg_ids)
        # Replies to the new tasks may arrive before this answer; they wait in _replies.
        reply = self._request("resubmit_request", {"msg_ids": old})
        if reply.meta.get("missing"):
            raise KeyError(f"cannot resubmit {reply.meta['missing']}: the hub has no stored request for them")
        mapping = reply.meta["mapping"]
        new = [mapping[m] for m in old if m in mapping]
        ar = AsyncResult(self, new, fname="resubmit")
        with self._lock:
            for mid in new:
                if mid in self._replies:
                    continue
                self.outstanding.add(mid)
                self._pending.setdefault(mid, []).append(ar)
                self.metadata.setdefault(mid, Metadata(msg_id=mid))
                self.history.append(mid)
        for mid in new:
            if mid not in self.outstanding:
                ar._msg_done(mid)
        if self.block if block is None else block:
            return ar.get()
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
