"""The pool manager: one process per pool that looks, decides and acts every ``interval``.

Started detached by ``hpcpar start --min/--max``, ``hpcpar scale`` or ``Cluster.scale`` /
``adapt`` (:func:`hpcpar.pool.control.ensure_manager`), so the pool outlives the shell or
notebook that made it. Each step, under the pool state's lock: poll the pool's jobs (one
status call), ask the controller for its engines and waiting tasks, update the blocks
(started, ended, failed), :func:`~hpcpar.pool.policy.plan`, then submit / cancel and log
every decision with its reason. It exits when the cluster is gone (its state file removed
by ``hpcpar stop``, or the controller unreachable for a minute) or on SIGTERM.

Run by hand: ``python -m hpcpar.pool.manager --profile-dir DIR [--cluster-id ID]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ..launchers.batch import FINAL
from ..paths import ProfileDir
from . import backoff
from .blocks import BlockLauncher
from .policy import EngineView, Observation, date_start, job_key, plan
from .state import PoolState, locked, read_pool, write_pool

log = logging.getLogger("hpcpar.pool")
CONTROLLER_GONE_AFTER = 60.0  # seconds without an answer before the manager gives up


class PoolManager:
    def __init__(self, pd: ProfileDir, cluster_id: str = "") -> None:
        self.pd = pd
        self.cluster_id = cluster_id
        self.blocks = BlockLauncher(pd, cluster_id, cluster_config(pd, cluster_id))
        self.idle_since: dict[int, float] = {}
        self._client: Any = None
        self._told: str | None = None  # the stop reason the controller last heard from us
        self.unreachable_since: float | None = None
        self.stopping = False

    # -- looking ----------------------------------------------------------------------------

    def _engines(self) -> dict[str, Any] | None:
        from ..client import Client

        try:
            if self._client is None:
                self._client = Client(self.pd.client_file(self.cluster_id), timeout=10)
            reply = self._client._request("engines_request", {}, timeout=10).meta
        except Exception as e:  # noqa: BLE001 - any failure to ask is "not reachable now"
            log.warning("controller not reachable: %s", e)
            self._close_client()
            return None
        if (reply.get("pool") or {}).get("stopped", "") != (self._told or ""):
            self._told = None  # a restored (or restarted) controller does not know it: tell it again
        return reply

    def tell_controller(self, state: PoolState) -> None:
        """The controller carries the pool's state to every client (pool_state notices), so
        a client that cannot read this profile's run dir (over SSH) hears why engines will
        not come. Sent when it changes, and again after each reconnect."""
        if self._client is None or state.stopped == self._told:
            return
        try:
            self._client._request("pool_state_request", {"stopped": state.stopped}, timeout=10)
        except Exception as e:  # noqa: BLE001 - try again next step
            log.warning("could not tell the controller the pool's state: %s", e)
            return
        self._told = state.stopped

    def _close_client(self) -> None:
        self._told = None
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001
                pass
            self._client = None

    def observe(self, now: float) -> Observation | None:
        reply = self._engines()
        if reply is None:
            return None
        views = []
        seen = set()
        for e in reply.get("engines", []):
            eid = int(e["id"])
            seen.add(eid)
            st = e.get("status") or {}
            busy = bool(e.get("queued") or e.get("running_lb") or st.get("state") == "busy")
            if busy:
                self.idle_since.pop(eid, None)
            since = self.idle_since.setdefault(eid, now) if not busy else now
            views.append(EngineView(eid, e.get("job_id"), busy, 0.0 if busy else now - since))
        for gone in set(self.idle_since) - seen:
            del self.idle_since[gone]
        return Observation(now, views, int(reply.get("tasks", {}).get("unassigned") or 0))

    # -- one step ---------------------------------------------------------------------------

    def step(self) -> bool:
        """Look, decide, act once; False when the pool is over (no state, or no cluster)."""
        if not self.pd.state_file(self.cluster_id).exists():
            return False
        with locked(self.pd, self.cluster_id):
            state = read_pool(self.pd, self.cluster_id)
            if state is None:
                return False
            now = time.time()
            obs = self.observe(now)
            if obs is None:
                self.unreachable_since = self.unreachable_since or now
                if now - self.unreachable_since > CONTROLLER_GONE_AFTER:
                    state.decide("stop", f"the controller has not answered for {CONTROLLER_GONE_AFTER:g} s")
                    write_pool(self.pd, self.cluster_id, state)
                    return False
                return True
            self.unreachable_since = None
            self.update_blocks(state, obs)
            self.act(state, obs)
            write_pool(self.pd, self.cluster_id, state)
            self.tell_controller(state)
        return True

    def update_blocks(self, state: PoolState, obs: Observation) -> None:
        alive = state.alive_blocks()
        states = self.blocks.poll([b.job_id for b in alive])
        registered = {job_key(e.job_id) for e in obs.engines if e.job_id}
        for b in alive:
            js = states.get(b.job_id)
            if job_key(b.job_id) in registered and not b.registered:
                b.registered = True
                backoff.succeeded(state)
            if js is None or js.state == "unknown":
                continue
            b.state = js.state
            if js.state == "running":
                date_start(b, js.started, obs.now, state.walltime)
            if js.state in FINAL:
                b.finished = obs.now
                if b.removing:
                    continue
                if not b.registered:
                    output = backoff.job_output(self.pd.log, b.job_id)
                    state.decide("failed", backoff.failed(state, b, obs.now, output), obs.now)
                else:
                    state.decide("ended", f"job {b.job_id} left the queue ({js.native or js.state})", obs.now)
        # Finished blocks stay a while for `hpcpar status`, then go.
        state.blocks = [b for b in state.blocks if b.alive or obs.now - (b.finished or obs.now) < 600]

    def act(self, state: PoolState, obs: Observation) -> None:
        result = plan(state, obs)
        state.next_change = result.next_change
        reason = "; ".join(result.reasons)
        for job_id, why in result.cancel:
            block = next(b for b in state.blocks if b.job_id == job_id)
            try:
                self.blocks.cancel(job_id)
            except Exception as e:  # noqa: BLE001 - report, try again next step
                state.decide("cancel failed", f"job {job_id}: {e}", obs.now)
                continue
            block.removing = why
            state.decide("cancel", f"job {job_id}: {why} ({reason})", obs.now)
        if result.submit:
            ok, why_not = backoff.may_submit(state, obs.now)
            if not ok:
                state.next_change = f"{result.submit} job(s) wanted; {why_not}"
                return
            count = 1 if state.failures else result.submit  # after a failure: one probe job at a time
            for _ in range(count):
                try:
                    block = self.blocks.submit(state.next_mpi_id)
                except Exception as e:  # noqa: BLE001 - counts as a failed job
                    state.failures += 1
                    state.next_submit_at = obs.now + backoff.delay(state)
                    state.decide("submit failed", str(e), obs.now)
                    if state.failures >= state.max_failures:
                        state.stopped = f"stopped submitting after {state.failures} failed submissions: {e}"
                    return
                state.blocks.append(block)
                if self.blocks.mpi:
                    state.next_mpi_id += block.engines
                state.decide("submit", f"job {block.job_id} ({block.engines} engine(s)): {reason}", obs.now)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        try:
            while not self.stopping:
                if not self.step():
                    break
                interval = (read_pool(self.pd, self.cluster_id) or PoolState("")).interval
                deadline = time.monotonic() + interval
                while not self.stopping and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            self._close_client()
        return 0

    def _on_term(self, signum: int, frame: Any) -> None:
        self.stopping = True


def cluster_config(pd: ProfileDir, cluster_id: str):
    """The cluster's configuration as it was started (its overrides reapplied)."""
    import json

    from ..config import load_config

    try:
        overrides = json.loads(pd.state_file(cluster_id).read_text()).get("overrides") or {}
    except (OSError, ValueError):
        overrides = {}
    return load_config(profile_dir=pd, overrides=overrides, override_source="the cluster's start")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcpar.pool.manager", description=__doc__.splitlines()[0])
    p.add_argument("--profile-dir", required=True)
    p.add_argument("--cluster-id", default="")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s pool: %(message)s", stream=sys.stderr)
    pd = ProfileDir(Path(args.profile_dir))
    manager = PoolManager(pd, args.cluster_id)
    log.info("pool manager %d for %s%s", os.getpid(), pd.path, f" ({args.cluster_id})" if args.cluster_id else "")
    return manager.run()


if __name__ == "__main__":
    sys.exit(main())
