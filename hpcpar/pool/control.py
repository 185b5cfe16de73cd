"""Changing a pool from anywhere: create it, scale it, make it adaptive, stop its manager,
describe it. Used by ``Cluster.scale`` / ``adapt`` / ``stop_adapt``, ``hpcpar start --min
--max``, ``hpcpar scale`` and ``hpcpar status``; all of it goes through the pool state file,
so it works from any shell and survives the process that made the pool."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from ..config import ConfigError
from ..launchers.process import ProcessRef, stop_processes
from ..paths import ProfileDir
from .blocks import BlockLauncher, describe_block
from .state import Block, PoolState, locked, pool_file, read_pool, remove_pool, write_pool


def new_pool(pd: ProfileDir, cluster_id: str, config: Any) -> PoolState:
    """A pool state from the [pool] configuration (checked: a pool needs batch engines)."""
    blocks = BlockLauncher(pd, cluster_id, config)
    return PoolState(
        system=blocks.system,
        engines_per_job=blocks.per_job,
        minimum=int(config["pool.min"]),
        maximum=int(config["pool.max"]),
        surge=int(config["pool.surge"]),
        interval=float(config["pool.interval"]),
        idle_timeout=float(config["pool.idle_timeout"]),
        wait_count=int(config["pool.wait_count"]),
        lead=float(config["pool.lead"]),
        backoff=float(config["pool.backoff"]),
        backoff_max=float(config["pool.backoff_max"]),
        max_failures=int(config["pool.max_failures"]),
        walltime=blocks.walltime_seconds(),
    )


def _adopt_engine_sets(pd: ProfileDir, cluster_id: str, state: PoolState) -> None:
    """A cluster started without a pool: its batch engine jobs become the pool's first blocks."""
    import json

    try:
        data = json.loads(pd.state_file(cluster_id).read_text())
    except (OSError, ValueError):
        return
    for entry in data.get("engine_sets", []):
        s = entry.get("state") or {}
        for job_id in s.get("job_ids", []):
            if job_id in s.get("cancelled", []):
                continue
            per = max(1, int(s.get("n", 1)) // max(1, len(s.get("job_ids", [])) or 1))
            state.blocks.append(Block(job_id=str(job_id), system=entry.get("launcher", state.system), engines=per,
                                      submitted=time.time(), registered=True))


def _cluster_config(pd: ProfileDir, cluster_id: str) -> Any:
    from .manager import cluster_config as load

    return load(pd, cluster_id)


def _change(pd: ProfileDir, cluster_id: str, how: Any, config: Any = None) -> PoolState:
    """Read-modify-write the pool state under its lock (creating it when there is none),
    then make sure a manager runs."""
    if not pd.state_file(cluster_id).exists():
        raise ConfigError([f"no cluster in profile {pd.name!r}" + (f" with cluster id {cluster_id!r}" if cluster_id
                                                                   else "") + ": start one first (hpcpar start)"])
    with locked(pd, cluster_id):
        state = read_pool(pd, cluster_id)
        if state is None:
            state = new_pool(pd, cluster_id, config if config is not None else _cluster_config(pd, cluster_id))
            _adopt_engine_sets(pd, cluster_id, state)
        how(state)
        write_pool(pd, cluster_id, state)
    ensure_manager(pd, cluster_id)
    return state


def scale(pd: ProfileDir, cluster_id: str, n: int, config: Any = None) -> PoolState:
    """Keep ``n`` engines (whole jobs), adaptive scaling off; a failed pool tries again."""
    if n < 0:
        raise ConfigError([f"scale needs zero or more engines, not {n}"])

    def how(state: PoolState) -> None:
        if state.maximum and n > state.maximum:
            raise ConfigError([f"scale({n}) is above the pool's max of {state.maximum} engines (its cap on "
                               f"engines in the queue): raise it first, e.g. 'hpcpar scale --max {n}' "
                               f"or Cluster.adapt(maximum={n}), then scale"])
        state.adaptive, state.target = False, n
        state.stopped, state.failures, state.next_submit_at = "", 0, 0.0
        state.decide("scale", f"scale({n}) asked")

    return _change(pd, cluster_id, how, config)


def adapt(pd: ProfileDir, cluster_id: str, minimum: int | None = None, maximum: int | None = None,
          interval: float | None = None, wait_count: int | None = None, config: Any = None,
          target: int | None = None) -> PoolState:
    """Adaptive between ``minimum`` and ``maximum`` engines (dask-jobqueue's vocabulary);
    ``target``: the size to start from (default: the current one, kept within the bounds)."""

    def how(state: PoolState) -> None:
        if minimum is not None:
            state.minimum = minimum
        if maximum is not None:
            state.maximum = maximum
        if interval is not None:
            state.interval = interval
        if wait_count is not None:
            state.wait_count = wait_count
        if state.maximum < max(state.minimum, 1):
            raise ConfigError([f"adapt needs maximum >= minimum and at least 1 (got minimum={state.minimum}, "
                               f"maximum={state.maximum})"])
        state.adaptive = True
        start = state.target if target is None else target
        state.target = max(state.minimum, min(state.maximum, start))
        state.stopped, state.failures, state.next_submit_at = "", 0, 0.0
        state.decide("adapt", f"adaptive between {state.minimum} and {state.maximum} engines")

    return _change(pd, cluster_id, how, config)


def stop_adapt(pd: ProfileDir, cluster_id: str = "") -> PoolState | None:
    """Adaptive scaling off; the pool keeps its current size (and keeps replacing jobs)."""
    if read_pool(pd, cluster_id) is None:
        return None

    def how(state: PoolState) -> None:
        state.adaptive = False
        state.decide("stop_adapt", f"adaptive scaling off; keeping {state.target} engines")

    return _change(pd, cluster_id, how)


def ensure_manager(pd: ProfileDir, cluster_id: str = "") -> int:
    """Start the pool's manager process unless one runs; return its pid."""
    with locked(pd, cluster_id):
        state = read_pool(pd, cluster_id)
        if state is None:
            raise RuntimeError(f"no pool in {pool_file(pd, cluster_id)}")
        if state.manager_pid and ProcessRef(state.manager_pid, _start(state)).alive():
            return state.manager_pid
        log = pd.log_file("pool-manager", cluster_id)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hpcpar.pool.manager", "--profile-dir", str(pd.path), "--cluster-id", cluster_id],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env=dict(os.environ),
            )
        ref = ProcessRef.of(proc.pid)
        state.manager_pid, state.manager_started = proc.pid, str(ref.start_time or "")
        write_pool(pd, cluster_id, state)
        return proc.pid


def _start(state: PoolState) -> int | None:
    return int(state.manager_started) if state.manager_started.isdigit() else None


def stop_manager(pd: ProfileDir, cluster_id: str = "", remove: bool = True) -> None:
    """Stop the manager (so it submits nothing more); with ``remove``, forget the pool.
    Its jobs are in the job ledger: the cluster's stop cancels them."""
    state = read_pool(pd, cluster_id)
    if state is None:
        return
    if state.manager_pid:
        stop_processes([ProcessRef(state.manager_pid, _start(state))], timeout=15.0)
    if remove:
        remove_pool(pd, cluster_id)


def describe(pd: ProfileDir, cluster_id: str = "", registered: int | None = None) -> dict[str, Any] | None:
    """The pool as ``hpcpar status`` shows it: target, registered, queued jobs, next change,
    recent decisions, why it stopped."""
    state = read_pool(pd, cluster_id)
    if state is None:
        return None
    now = time.time()
    alive = state.alive_blocks()
    manager = bool(state.manager_pid and ProcessRef(state.manager_pid, _start(state)).alive())
    return {
        "system": state.system,
        "adaptive": state.adaptive,
        "min": state.minimum,
        "max": state.maximum,
        "target": state.target,
        "registered": registered,
        "engines_per_job": state.engines_per_job,
        "jobs": [describe_block(b, now) for b in alive],
        "queued_jobs": sum(1 for b in alive if b.state in ("pending", "held")),
        "next_change": state.next_change,
        "stopped": state.stopped,
        "failures": state.failures,
        "manager": {"pid": state.manager_pid, "running": manager},
        "decisions": state.decisions[-10:],
    }


def render(pool: dict[str, Any]) -> list[str]:
    """Lines for ``hpcpar status``."""
    mode = f"adaptive {pool['min']}-{pool['max']}" if pool["adaptive"] else "fixed size"
    reg = "?" if pool["registered"] is None else pool["registered"]
    lines = [f"POOL: {mode}, target {pool['target']} engines, {reg} registered, {len(pool['jobs'])} job(s) "
             f"({pool['queued_jobs']} queued), {pool['engines_per_job']} engine(s) per job"
             + ("" if pool["manager"]["running"] else "; manager NOT running ('hpcpar scale N' restarts it)")]
    if pool["stopped"]:
        lines.append(f"  STOPPED: {pool['stopped']}")
    if pool["next_change"]:
        lines.append(f"  next: {pool['next_change']}")
    for d in pool["decisions"][-5:]:
        stamp = time.strftime("%H:%M:%S", time.localtime(d["time"]))
        first, *rest = str(d["reason"]).splitlines() or [""]
        lines.append(f"  {stamp} {d['action']}: {first}")
        lines += [f"    {line}" for line in rest]
    return lines
