"""Load-balanced tasks: dependencies, placement, retries.

A task waits until its ``after`` / ``follow`` dependencies are met (or fails
at once when they cannot be, or with DependencyTimeout after ``timeout``),
then queues until an engine it may run on has room under the high-water
mark. An engine where the task raised UnmetDependency is never used for it
again; a failed attempt or a dead engine is retried elsewhere while
``retries`` last.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Controller
    from .engines import EngineRecord
    from .tasks import Task


MET, WAIT, IMPOSSIBLE, INVALID = "met", "wait", "impossible", "invalid"


class LoadBalancer:
    def __init__(self, controller: Controller) -> None:
        self.ctl = controller
        self.queue: deque[Task] = deque()
        self.waiting: dict[str, Task] = {}
        self.waiters: dict[str, set[str]] = {}  # dependency msg_id -> waiting task msg_ids
        self.done: OrderedDict[str, tuple[bool, int | None]] = OrderedDict()
        self.looking_up: set[str] = set()  # asked the hub about these
        self.unknown: OrderedDict[str, None] = OrderedDict()  # the hub has no finished record of these

    # -- submission -------------------------------------------------------------------

    def submit(self, task: Task) -> None:
        h = task.header
        task.retries_left = int(h.get("retries") or 0)
        timeout = h.get("timeout")
        task.deadline = time.monotonic() + float(timeout) if timeout else None
        if h.get("shm"):
            task.host_key = h.get("shm_key") or ""
        self._place(task)

    def _place(self, task: Task) -> None:
        state, why = self._dependency_state(task)
        if state in (IMPOSSIBLE, INVALID):
            # InvalidDependency (a subclass of ImpossibleDependency): names no task this cluster knows.
            self.ctl.fail_task(task, "InvalidDependency" if state == INVALID else "ImpossibleDependency", why)
        elif state == WAIT:
            self.waiting[task.msg_id] = task
            for dep in self._deps_of(task):
                if dep not in self.done:
                    self.waiters.setdefault(dep, set()).add(task.msg_id)
        else:
            self.queue.append(task)
            self.schedule()

    @staticmethod
    def _deps_of(task: Task) -> set[str]:
        ids: set[str] = set()
        for key in ("after", "follow"):
            spec = task.header.get(key)
            if spec:
                ids.update(spec["msg_ids"])
        return ids

    def _judge(self, spec: dict[str, Any]) -> tuple[str, list[int | None]]:
        met, bad, pending = [], 0, 0
        for dep in spec["msg_ids"]:
            result = self.done.get(dep)
            if result is None:
                if dep in self.ctl.tasks:
                    pending += 1
                    continue
                if dep in self.unknown:
                    return INVALID, []  # no such task: it will never finish
                self._look_up(dep)  # finished long ago? the task database knows
                pending += 1
                continue
            ok, engine_id = result
            if (ok and spec.get("success", True)) or (not ok and spec.get("failure", False)):
                met.append(engine_id)
            else:
                bad += 1
        if spec.get("all", True):
            if bad:
                return IMPOSSIBLE, []
            return (WAIT if pending else MET), met
        if met:
            return MET, met
        return (WAIT if pending else IMPOSSIBLE), []

    def _dependency_state(self, task: Task) -> tuple[str, str]:
        h = task.header
        allowed: set[int] | None = set(h["lb_targets"]) if h.get("lb_targets") is not None else None
        for key in ("after", "follow"):
            spec = h.get(key)
            if not spec:
                continue
            state, engines = self._judge(spec)
            if state == INVALID:
                return INVALID, f"its '{key}' dependency {spec['msg_ids']} names a task this cluster has no record of"
            if state == IMPOSSIBLE:
                return IMPOSSIBLE, f"its '{key}' dependency {spec['msg_ids']} can no longer be met"
            if state == WAIT:
                return WAIT, ""
            if key == "follow":
                where = {e for e in engines if e is not None}
                if spec.get("all", True) and len(where) > 1:
                    return IMPOSSIBLE, f"'follow' needs one engine, but its tasks ran on engines {sorted(where)}"
                allowed = where if allowed is None else allowed & where
        task.allowed = allowed
        if allowed is not None and not allowed:
            return IMPOSSIBLE, "no engine satisfies both 'targets' and 'follow'"
        return MET, ""

    def _look_up(self, dep: str) -> None:
        if dep not in self.looking_up:
            self.looking_up.add(dep)
            self.ctl.hub.look_up([dep])

    def looked_up(self, found: dict[str, Any]) -> None:
        """The hub's answer: {msg_id: [ok, engine_id] or None (no finished record)}."""
        for dep, result in found.items():
            self.looking_up.discard(dep)
            if result is None:
                self.unknown[dep] = None
                if len(self.unknown) > self.ctl.config.dependency_memory:
                    self.unknown.popitem(last=False)
                self._wake(dep)
            else:
                self.task_finished(dep, bool(result[0]), result[1])

    # -- completion of any task (direct or load-balanced) ---------------------------------

    def task_finished(self, msg_id: str, ok: bool, engine_id: int | None) -> None:
        self.done[msg_id] = (ok, engine_id)
        if len(self.done) > self.ctl.config.dependency_memory:
            self.done.popitem(last=False)
        self._wake(msg_id)

    def _wake(self, msg_id: str) -> None:
        for waiter_id in self.waiters.pop(msg_id, ()):
            task = self.waiting.get(waiter_id)
            if task is None:
                continue
            state, _ = self._dependency_state(task)
            if state != WAIT:
                del self.waiting[waiter_id]
                self._place(task)

    def check_timeouts(self, now: float) -> None:
        for task in [t for t in self.waiting.values() if t.deadline is not None and now >= t.deadline]:
            self.waiting.pop(task.msg_id, None)
            self.ctl.fail_task(task, "DependencyTimeout",
                               f"dependencies of task {task.msg_id} were not met within {task.header.get('timeout')} s")

    # -- scheduling --------------------------------------------------------------------------

    def _eligible(self, task: Task, engines: list[EngineRecord]) -> list[EngineRecord]:
        allowed, key = task.allowed, task.host_key
        return [e for e in engines if e.id not in task.blacklist and (allowed is None or e.id in allowed)
                and (key is None or e.info.get("host_key") == key)]

    def schedule(self) -> None:
        """Hand queued tasks to engines with room under the hwm."""
        if not self.queue:
            return
        ctl = self.ctl
        hwm = ctl.config.hwm
        engines = ctl.engines.ready()
        free = [e for e in engines if e.retiring is None and (hwm <= 0 or e.lb_in_flight < hwm)]
        skipped: list[Task] = []
        while self.queue and free:
            task = self.queue.popleft()
            if task.msg_id not in ctl.tasks:
                continue  # aborted while queued
            restricted = task.allowed is not None or task.blacklist or task.host_key is not None
            candidates = self._eligible(task, free) if restricted else free
            if not candidates:
                if not self._eligible(task, engines) and not self._may_come_back(task):
                    self._impossible(task)
                else:
                    skipped.append(task)
                continue
            rec = ctl.scheme(candidates)
            ctl.dispatch_lb(task, rec)
            if hwm > 0 and rec.lb_in_flight >= hwm:
                free.remove(rec)
            if rec.id not in ctl.engines.by_id:
                free = [e for e in free if e is not rec]
        self.queue.extendleft(reversed(skipped))

    def _may_come_back(self, task: Task) -> bool:
        """Engines that are on their way: registered but not ready yet, or (after a
        restart) engines of the old controller that may still re-attach."""
        expected = set(self.ctl.engines.expected.values())
        expected |= {e.id for e in self.ctl.engines.by_id.values()
                     if not e.ready and (task.host_key is None or e.info.get("host_key") == task.host_key)}
        allowed = task.allowed if task.allowed is not None else expected
        return bool(expected & (allowed - task.blacklist))

    def _impossible(self, task: Task) -> None:
        if task.host_key is not None and not self._eligible(task, self.ctl.engines.ready()):
            why = ("its data went through shared memory on the client's host, and no engine on that host "
                   "may take it; submit it again, or use Client(shared_memory=False)")
        elif task.blacklist:
            why = f"it raised UnmetDependency on engines {sorted(task.blacklist)} and no other engine may take it"
        else:
            why = f"none of the engines it may run on ({sorted(task.allowed or [])}) is registered"
        self.ctl.fail_task(task, "ImpossibleDependency", why)

    def retry(self, task: Task, engine: EngineRecord | None, avoid_engine: bool) -> None:
        """Queue a task again, at the front; avoid the engine it failed on if another may take it."""
        if avoid_engine and engine is not None:
            others = [e for e in self.ctl.engines.ready() if e.id != engine.id]
            if self._eligible(task, others):
                task.blacklist.add(engine.id)
        self.queue.appendleft(task)

    def abort(self, wanted: set[str] | None, client: bytes) -> list[str]:
        aborted = []
        for task in [*self.queue, *self.waiting.values()]:
            if task.msg_id in self.ctl.tasks and (
                (wanted is None and task.client == client) or (wanted is not None and task.msg_id in wanted)
            ):
                self.waiting.pop(task.msg_id, None)
                self.ctl.fail_task(task, "TaskAborted", f"task {task.msg_id} was aborted before it started")
                aborted.append(task.msg_id)
        return aborted

    def unassigned(self) -> list[str]:
        return [t.msg_id for t in [*self.queue, *self.waiting.values()] if t.msg_id in self.ctl.tasks]
