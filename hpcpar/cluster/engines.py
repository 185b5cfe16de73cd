"""Engine sets: starting them (with their forwarders), waiting for their engines to
register, adding, signalling, stopping and restarting them.

Each set is one launcher (local processes, an MPI job, a batch job or array) under an
engine set id, as in ipyparallel (``cluster.engines[set_id]``). The methods here block;
the Cluster API wraps them as coroutines with ``_sync`` twins.
"""

from __future__ import annotations

import signal as signal_module
import socket
import time
from pathlib import Path
from typing import Any

from ..launchers import Launcher, LauncherError
from ..paths import ProfileDir
from .helpers import (
    FINAL_STATES,
    ClusterError,
    is_batch_launcher,
    job_output,
    layout,
    python_cmd,
    tail,
)


def new_engine_set_id(taken: Any) -> str:
    """``"<epoch seconds>"``, with ``-1``, ``-2``... when several sets start in one second."""
    base = engine_set_id = str(int(time.time()))
    i = 1
    while engine_set_id in taken:
        engine_set_id = f"{base}-{i}"
        i += 1
    return engine_set_id


def set_pids(launcher: Launcher) -> set[int] | None:
    """The pids of a set's live engine processes on this host, or None when the launcher
    does not know them (batch jobs, SSH: their processes run on other hosts)."""
    from ..launchers.local import LocalLauncher
    from ..launchers.mpi import MPILauncher

    if isinstance(launcher, LocalLauncher):
        return {r.pid for r in launcher.alive()}
    if isinstance(launcher, MPILauncher):
        starter = launcher.starter.pid if launcher.starter is not None else None
        return {r.pid for r in launcher.processes() if r.pid != starter}
    return None


def parse_signal(sig: int | str) -> int:
    """``signal.SIGINT``, ``2``, ``"SIGINT"`` or ``"INT"`` -> 2."""
    if isinstance(sig, int):
        return int(sig)
    name = str(sig).upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(getattr(signal_module, name))
    except AttributeError:
        raise ValueError(f"unknown signal {sig!r}: give a number or a name such as 'SIGINT'") from None


class EngineSetsMixin:
    """Cluster methods that start, watch, signal and stop engine sets and forwarders."""

    profile_dir: ProfileDir
    cluster_id: str
    n: int
    state: Any
    engine_launcher: str
    engines: dict[str, Launcher]
    forwarder_sets: list[Launcher]
    engine_args: list[str]
    env: dict[str, str]
    config: Any

    @property
    def engine_sets(self) -> list[Launcher]:
        """The engine set launchers, oldest first."""
        return list(self.engines.values())

    @property
    def engine_set(self) -> Launcher | None:
        """The first engine set (most clusters have one), as ipyparallel's ``engine_set``."""
        return next(iter(self.engines.values()), None)

    def _start_forwarders(self, k: int, timeout: float = 30.0) -> list[Path]:
        """Start ``k`` local forwarders (``hpcpar forwarder``); return their engine connection files."""
        from ..commands.forwarder import forwarder_file
        from ..launchers.local import LocalLauncher

        files = []
        for i in range(k):
            name = f"f{i}"
            path = forwarder_file(self.profile_dir, self.cluster_id, name)
            path.unlink(missing_ok=True)
            launcher = LocalLauncher(role="forwarders", n=1)
            self.forwarder_sets.append(launcher)
            command = python_cmd("forwarder", "--profile-dir", str(self.profile_dir.path),
                                 "--cluster-id", self.cluster_id, "--name", name,
                                 "--controller-timeout", f"{self.config['engine.controller_timeout']:g}")
            try:
                launcher.start(command, self.env, str(self.profile_dir.log_file(f"forwarder-{name}", self.cluster_id)))
            finally:
                self._save()
            files.append(path)
        deadline = time.monotonic() + timeout
        for path, launcher in zip(files, self.forwarder_sets[-k:]):
            while not path.exists():
                if launcher.status() != "running" or time.monotonic() > deadline:
                    log_path = self.profile_dir.log_file(f"forwarder-{path.stem.rsplit('-', 1)[1]}", self.cluster_id)
                    raise ClusterError(f"a forwarder did not start (log {log_path}):\n{tail(log_path)}")
                time.sleep(0.05)
        return files

    def _start_engines(self, n: int | None = None, engine_set_id: str | None = None,
                       connection_file: Path | None = None, env: dict[str, str] | None = None) -> str:
        """Start one more engine set of ``n`` engines (default: the cluster's n); return its
        id. With ``connection_file`` (a forwarder's), they connect through that forwarder."""
        from ..launchers.build import batch_engine_env, engine_command, make_launcher

        n = self.n if n is None else n
        if self.state is None:
            raise ClusterError("start the controller first (await cluster.start_controller())")
        if engine_set_id is None:
            engine_set_id = new_engine_set_id(self.engines)
        elif engine_set_id in self.engines:
            raise ClusterError(f"engine set {engine_set_id!r} exists; stop it first or give another id")
        launcher = make_launcher(self.engine_launcher, "engines", n, config=self.config,
                                 profile_dir=self.profile_dir, cluster_id=self.cluster_id)
        batch = is_batch_launcher(launcher)
        env = {**self.env, **(env or {})}
        if batch:
            try:
                env.update(batch_engine_env(self.config, self.profile_dir, self.cluster_id))
            except LauncherError as e:
                raise ClusterError(str(e)) from None
        command = engine_command(self.config, self.profile_dir, self.cluster_id,
                                 mpi=bool(getattr(launcher, "mpi", False)), profile_files=not batch)
        index = len(self.engines)
        log_path = self.profile_dir.log_file(f"engine-{index}-{{index}}", self.cluster_id)
        self.engines[engine_set_id] = launcher
        try:
            via = ["--file", str(connection_file)] if connection_file is not None else []
            launcher.start([*command, *via, *self.engine_args], env, str(log_path))
        finally:
            self._save()
        if batch:
            ids = ", ".join(launcher.job_ids)
            self._say(f"engines: {launcher.name} job {ids} submitted ({layout(launcher)}), recorded in "
                      f"{self.profile_dir.run}")
        return engine_set_id

    def expected_engines(self) -> int:
        return sum(int(getattr(s, "n", 0) or 0) for s in self.engines.values()) or self.n

    def _wait_for_engines(
        self, n: int | None = None, timeout: float | None = 60.0, interactive: bool | None = None
    ):
        """Wait until ``n`` engines (default: all started) registered; return the Client.

        With a progress callback, reports "engines registered 37/128" and the queue state of
        the batch jobs as they change. Fails early when every engine set has ended. Time a
        batch job spends queued does not count against ``timeout`` (None: no limit).
        """
        from ..progress import Progress

        rc = self._connect_client()
        want = self.expected_engines() if n is None else n
        with Progress(total=want, desc="engines", unit="engine",
                      enabled=False if self.progress is not None else interactive) as bar:
            return self._wait_loop(rc, want, timeout, bar)

    def _wait_loop(self, rc: Any, want: int, timeout: float | None, bar: Any):
        from ..error import PoolStopped
        from ..pool.state import stopped_reason

        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        shown, shown_jobs, shown_at = None, None, 0.0
        last_have, forced_at = -1, 0.0
        pool_look = 0.0
        while True:
            have = len(rc.ids)
            bar.update_to(min(have, want))
            if have != last_have and (time.monotonic() - forced_at >= 1.0 or have >= want):
                # Engines registering means jobs started: ask the scheduler now, not at back-off.
                for s in self.engines.values():
                    if is_batch_launcher(s) and last_have >= 0:
                        s.poll(force=True)
                last_have, forced_at = have, time.monotonic()
            states = [(s, s.status()) for s in self.engines.values()]
            waiting = getattr(self.progress, "waiting", None)
            if waiting is not None:  # a live status line that draws itself (hpcpar start)
                waiting(have, want, list(self.engines.values()))
            else:
                jobs = "; ".join(f"{s.name} job {', '.join(s.job_ids)}: {st}" for s, st in states if is_batch_launcher(s))
                line = f"engines registered {have}/{want}" + (f"; {jobs}" if jobs else "")
                now = time.monotonic()
                # A line when a job changes state, when all are in, else at most one a second.
                if line != shown and (jobs != shown_jobs or have >= want or now - shown_at >= 1.0):
                    self._say(line)
                    shown, shown_jobs, shown_at = line, jobs, now
            if have >= want:
                return rc
            if states and all(st in FINAL_STATES for _, st in states):
                time.sleep(0.5)  # a registration may still be on its way
                if len(rc.ids) >= want:
                    continue
                raise ClusterError(f"{have} of {want} engines registered, and every engine set has ended "
                                   f"({', '.join(s.describe() + ' ' + st for s, st in states)}):"
                                   f"{job_output(self.profile_dir, self.cluster_id, 'engine')}")
            if time.monotonic() >= pool_look:  # an elastic pool that gave up: no engines are coming
                pool_look = time.monotonic() + 1.0
                reason = stopped_reason(self.profile_dir, self.cluster_id)
                if reason and len(rc.ids) < want:
                    raise PoolStopped(f"{len(rc.ids)} of {want} engines registered, and the engine pool {reason}")
            if deadline is not None and any(st in ("pending", "held") for _, st in states):
                deadline = max(deadline, time.monotonic() + 1.0)  # time spent queued does not count
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"{have} of {want} engines registered after {timeout:g} s; check the engines' logs in "
                    f"{self.profile_dir.log} (or the batch job output){job_output(self.profile_dir, self.cluster_id, 'engine')}"
                )
            time.sleep(0.1)

    def _add_engines(self, n: int, wait: bool = False, timeout: float | None = 60.0) -> Launcher:
        """Start ``n`` more engines for this (running) cluster; with ``wait``, until they registered."""
        if self.state is None:
            raise ClusterError("the cluster is not started")
        before = len(self._connect_client().ids) if wait else 0
        set_id = self._start_engines(n)
        self.n = self.expected_engines()
        self._save()
        if wait:
            self._wait_for_engines(before + n, timeout=timeout)
        return self.engines[set_id]

    # -- which engine belongs to which set -------------------------------------------------------

    def _registered(self) -> dict[int, dict[str, Any]]:
        """``{engine id: registration info}`` (hostname, pid, MPI rank...) as the client knows it."""
        rc = self._connect_client()
        with rc._lock:
            return {eid: dict(info) for eid, info in rc._engines.items()}

    def engine_ids_by_set(self) -> dict[str, list[int]]:
        """``{engine set id: [registered engine ids]}``. Engines are matched to local and MPI
        sets by pid, to batch sets by the job id they report in their status; what is left
        belongs to the one remaining set, when there is exactly one."""
        registered = self._registered()
        here = socket.gethostname()
        found: dict[str, list[int]] = {}
        unknown = []
        for set_id, launcher in self.engines.items():
            pids = set_pids(launcher)
            if pids is None:
                unknown.append(set_id)
                continue
            found[set_id] = sorted(eid for eid, info in registered.items()
                                   if info.get("pid") in pids and info.get("hostname", here) == here)
        if any(getattr(self.engines[s], "job_ids", None) for s in unknown):
            jobs = self._job_of_engines()
            for set_id in list(unknown):
                job_ids = set(getattr(self.engines[set_id], "job_ids", None) or [])
                mine = sorted(eid for eid, job in jobs.items() if job in job_ids)
                if mine:
                    found[set_id] = mine
                    unknown.remove(set_id)
        if len(unknown) == 1:
            claimed = {eid for ids in found.values() for eid in ids}
            found[unknown[0]] = sorted(set(registered) - claimed)
        return found

    def _job_of_engines(self) -> dict[int, str]:
        """``{engine id: batch job id}`` from the status engines report (empty if they do not)."""
        try:
            statuses = self._connect_client().queue_status(verbose=True)
        except Exception:  # noqa: BLE001 - an older controller: no status, no attribution
            return {}
        return {eid: str(st["status"]["job_id"]) for eid, st in statuses.items()
                if isinstance(eid, int) and isinstance(st, dict) and isinstance(st.get("status"), dict)
                and st["status"].get("job_id")}

    def _set_ids(self, engine_set_id: str | list[str] | None) -> list[str]:
        if engine_set_id is None:
            return list(self.engines)
        wanted = [engine_set_id] if isinstance(engine_set_id, str) else list(engine_set_id)
        for set_id in wanted:
            if set_id not in self.engines:
                raise ClusterError(f"no engine set {set_id!r} in this cluster (engine sets: "
                                   f"{', '.join(map(repr, self.engines)) or 'none'})")
        return wanted

    # -- signal, stop, restart ---------------------------------------------------------------------

    def _signal_engines(self, signum: int | str, engine_set_id: str | list[str] | None = None) -> None:
        """Send ``signum`` to every engine of the given sets (default: all): straight to the
        processes when they run on this host (local sets, MPI ranks), even if an engine is
        stuck; otherwise through the controller (batch and SSH sets)."""
        from ..launchers.process import ProcessRef

        sig = parse_signal(signum)
        set_ids = self._set_ids(engine_set_id)
        by_set, registered = self.engine_ids_by_set(), self._registered()
        for set_id in set_ids:
            launcher = self.engines[set_id]
            if set_id not in by_set:
                raise ClusterError(f"cannot tell which engines belong to engine set {set_id!r} "
                                   f"({launcher.describe()}); use rc.send_signal({sig}, targets=[...])")
            ids = [eid for eid in by_set[set_id] if eid in registered]
            if set_pids(launcher) is not None:
                for eid in ids:
                    ProcessRef.of(int(registered[eid]["pid"])).signal(sig)
            elif ids:
                self._connect_client().send_signal(sig, targets=ids, block=True)

    def _stop_engines(self, engine_set_id: str | int | list[Any] | None = None) -> None:
        """Stop engine sets (ids as strings; default: all) and single engines (engine ids as
        ints, shut down through the controller; in an MPI set this may end the whole job)."""
        if engine_set_id is None or isinstance(engine_set_id, str):
            set_ids, engine_ids = self._set_ids(engine_set_id), []
        else:
            items = [engine_set_id] if isinstance(engine_set_id, int) else list(engine_set_id)
            bad = [i for i in items if not isinstance(i, (str, int)) or isinstance(i, bool)]
            if bad:
                raise ClusterError(f"stop_engines takes engine set ids (str) or engine ids (int), not {bad!r}")
            set_ids = self._set_ids([i for i in items if isinstance(i, str)])
            engine_ids = [i for i in items if isinstance(i, int)]
        if engine_ids:
            self._connect_client().shutdown(targets=engine_ids, block=True)
        errors = []
        for set_id in set_ids:
            try:
                self.engines[set_id].stop()
            except LauncherError as e:
                errors.append(str(e))
                continue
            del self.engines[set_id]
        if self.state is not None and set_ids:
            self._save()
        if errors:
            raise ClusterError("; ".join(errors))

    def _restart_engines(self, engine_set_id: str | list[str] | None = None, timeout: float = 60.0) -> None:
        """Stop each given engine set (default: all) and start it again with the same id and
        size. MPI ranks ask for their old engine ids, so a restarted MPI set keeps its ids."""
        for set_id in self._set_ids(engine_set_id):
            launcher = self.engines[set_id]
            n = int(launcher.n)
            old = self.engine_ids_by_set().get(set_id, [])
            self._ask_to_leave(old)
            self._stop_engines(set_id)
            self._wait_ids_free(old, set_id, timeout)
            env = {}
            if getattr(launcher, "mpi", False) and old and old == list(range(old[0], old[0] + len(old))):
                env["HPCPAR_MPI_ID_BASE"] = str(old[0])  # rank r asks for engine id base + r
            self._say(f"engine set {set_id}: restarting {n} engines")
            self._start_engines(n, engine_set_id=set_id, env=env)

    def _ask_to_leave(self, ids: list[int]) -> None:
        """Shut the engines down through the controller before their launcher stops them: each
        engine's I/O thread unregisters and exits, also when its main thread is stuck in C code
        (an MPI collective), which never runs a SIGTERM handler; their ids are free at once."""
        rc = self._connect_client()
        live = [i for i in ids if i in rc.ids]
        if live:
            try:
                rc.shutdown(targets=live, block=True)
            except Exception as e:  # noqa: BLE001 - the launcher's stop follows anyway
                self._say(f"engines {live}: shutdown through the controller failed ({e}); stopping them")

    def _wait_ids_free(self, old: list[int], set_id: str, timeout: float) -> None:
        """Until the stopped engines' ids are free for the restarted set. Engines that are
        stopped tell the controller (and wait for its answer) before they exit, so this is
        prompt; an engine killed outright is freed when its heartbeats time out."""
        rc = self._connect_client()
        deadline = time.monotonic() + timeout
        while taken := set(old) & {k for k in rc.queue_status() if isinstance(k, int)}:  # the controller's view
            if time.monotonic() > deadline:
                raise TimeoutError(f"engines {sorted(taken)} of set {set_id!r} still registered {timeout:g} s "
                                   "after their stop")
            time.sleep(0.05)

    def _stop_forwarders(self) -> None:
        for s in self.forwarder_sets:
            s.stop()
