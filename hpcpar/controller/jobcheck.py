"""After ``--restore``: ask the batch system whether the jobs of the old controller's
engines still exist, so engines whose job ended with the controller are given up at once
(their tasks retried or failed) instead of when the re-attach window closes.

An engine in a batch job reports its job id when it registers; the controller keeps it
with the engine for a restore (lifecycle.py). The job ledger says which batch system each
of the cluster's jobs went to, and that system's launcher asks about them (its status
command, the same call the launcher polls with) in a thread of its own, since a status
command may take seconds. Only a job the scheduler positively reports finished, or no
longer lists, counts as gone; a failed status call, or an engine job id the ledger does
not know, says nothing and leaves the window to decide. Where the scheduler answers about
one array task (SLURM ``17_3``, SGE ``17.3``: the launcher's ``asks_tasks``), an engine's
task is asked about by the id it reported, so a finished task of a live array counts as
gone. Elsewhere an engine in an array task is not asked about: an array's state is not its
task's (SLURM's PBS wrappers answer ``qstat -f 17`` with the state of whichever task holds
the array's id, ``C`` while the other task still runs), so the window decides for it.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from ..paths import ProfileDir
from ..pool.policy import job_key  # 123.server / 123[].server -> 123, as engines see it

log = logging.getLogger("hpcpar.controller")
CHECK_EVERY = 2.0  # seconds between two questions to the batch system while engines are away


class JobCheck:
    """Watches the jobs of engines expected back; what it finds gone waits in :meth:`gone`."""

    def __init__(self, profile_dir: ProfileDir, cluster_id: str, jobs: dict[int, str]) -> None:
        self.profile_dir = profile_dir
        self.cluster_id = cluster_id
        self.jobs = dict(jobs)  # engine id -> its batch job id (as the engine saw it); under _lock
        self._lock = threading.Lock()
        self._found: queue.SimpleQueue[tuple[int, str, str]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hpcpar-jobcheck", daemon=True)

    def start(self) -> JobCheck:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def forget(self, engine_id: int) -> None:
        """The engine is back (or given up otherwise): its job needs no more questions."""
        with self._lock:
            self.jobs.pop(engine_id, None)

    def gone(self) -> list[tuple[int, str, str]]:
        """(engine id, job id, what the scheduler said) for each engine whose job is gone."""
        out = []
        while True:
            try:
                out.append(self._found.get_nowait())
            except queue.Empty:
                return out

    def _run(self) -> None:
        try:
            launchers = self._launchers()
        except Exception as e:  # noqa: BLE001 - without them the re-attach window decides, as before
            log.warning("cannot ask the batch system about the engines' jobs after the restore: %s", e)
            return
        if not launchers:
            return
        while not self._stop.is_set() and self._waiting_for_any():
            for launcher, ids in launchers:
                self._ask(launcher, ids)
            self._stop.wait(CHECK_EVERY)

    def _waiting_for_any(self) -> bool:
        with self._lock:
            return bool(self.jobs)

    def _launchers(self) -> list[tuple[Any, dict[str, list[int]]]]:
        """Per batch system: its launcher and {ledger job id: engine ids in that job}."""
        from ..launchers.base import LauncherError, get_launcher_class
        from ..launchers.batch import BatchLauncher
        from ..launchers.ledger import read_jobs
        from ..pool.manager import cluster_config

        by_key: dict[str, tuple[str, str]] = {}
        classes: dict[str, type] = {}  # each batch system of the ledger, looked up once
        for record in read_jobs(self.profile_dir, self.cluster_id):
            if record.role != "engines":
                continue
            if record.system not in classes:
                try:
                    cls = get_launcher_class(record.system)
                except LauncherError:  # not installed here (a plug-in): the window decides for its engines
                    continue
                if not issubclass(cls, BatchLauncher):
                    continue
                classes[record.system] = cls
            by_key[job_key(record.job_id)] = (record.system, record.job_id)
        per_system: dict[str, dict[str, list[int]]] = {}
        with self._lock:
            jobs = dict(self.jobs)
        for eid, job in jobs.items():
            known = by_key.get(job_key(job))
            if known is not None:
                system, ledger_id = known
                if classes[system].asks_tasks:
                    ask = job  # 17_3: that array task's own state
                elif job.isdigit():
                    ask = ledger_id  # a job of its own (123 of 123.server)
                else:
                    continue  # an array task the status command cannot tell apart: the window decides
                per_system.setdefault(system, {}).setdefault(ask, []).append(eid)
        if not per_system:
            return []
        config = cluster_config(self.profile_dir, self.cluster_id)
        out = []
        for system, ids in per_system.items():
            launcher = classes[system](role="engines", profile_dir=self.profile_dir, cluster_id=self.cluster_id,
                                       options=config.launcher_options(system, "engines"))
            out.append((launcher, ids))
        return out

    def _ask(self, launcher: Any, ids: dict[str, list[int]]) -> None:
        from ..launchers.base import LauncherError
        from ..launchers.batch import FINAL, PollError

        with self._lock:
            waiting = {job: eids for job, eids in ids.items() if any(e in self.jobs for e in eids)}
        if not waiting:
            return
        try:
            found = launcher.query(list(waiting))
        except (LauncherError, PollError) as e:
            log.info("could not ask %s about the engines' jobs (%s); trying again", launcher.name, e)
            return
        for job, eids in waiting.items():
            state = found.get(job)
            if state is not None and state.state not in FINAL:
                continue
            said = "no longer in the queue" if state is None else f"{state.native or state.state}"
            with self._lock:
                gone = [eid for eid in eids if self.jobs.pop(eid, None) is not None]
            for eid in gone:
                self._found.put((eid, job, f"{launcher.name} job {job}: {said}"))
