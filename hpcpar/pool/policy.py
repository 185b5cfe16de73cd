"""The pool's policy: from what it sees to what it does, with a reason for each step.

Pure functions, no scheduler and no sockets: the manager observes (engines from the
controller, jobs from the launcher's poll), calls :func:`plan`, and carries the plan out
through the launcher's submit / cancel.

* Capacity counts engines of jobs still queued, so the pool never over-submits; jobs within
  ``lead`` seconds of their walltime do not count, so their replacements go in early.
* ``maximum`` (when set) caps every engine the pool has in the queue: queued, running,
  ending and being removed alike (a site's QOS cap counts them all), so a replacement
  waits for room unless ``surge`` allows that many engines above it while replacing.
* Fixed size (``scale``): keep ``target`` engines, in whole jobs.
* Adaptive: grow when load-balanced tasks wait and no engine is idle (up to ``maximum``);
  shrink when engines have been idle ``idle_timeout`` s for ``wait_count`` looks in a row
  (never below ``minimum``). Either way a job whose engines hold work is never cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .state import Block, PoolState


@dataclass(frozen=True)
class EngineView:
    id: int
    job_id: str | None
    busy: bool
    idle_for: float  # seconds it has been idle (0 while busy)


@dataclass(frozen=True)
class Observation:
    now: float
    engines: list[EngineView]
    unassigned: int  # load-balanced tasks waiting for an engine


@dataclass
class Plan:
    target: int
    submit: int = 0
    cancel: list[tuple[str, str]] = field(default_factory=list)  # (job id, reason)
    reasons: list[str] = field(default_factory=list)
    next_change: str = ""


def job_key(job_id: str | None) -> str:
    """Compare job ids on their leading number (PBS prints 123.server, engines see 123)."""
    text = str(job_id or "")
    digits = ""
    for ch in text:
        if not ch.isdigit():
            break
        digits += ch
    return digits or text


START_SLACK = 120.0  # seconds of clock skew a scheduler's start time may show


def date_start(block: Block, scheduler_start: float | None, now: float, walltime: float) -> None:
    """Date a running job's start, and so its end: the scheduler's own start time when its
    status output gives one and it is plausible (not in the future, not longer ago than
    the walltime: a status command run in another time zone fails this), else the moment
    the pool first saw the job running (up to one ``interval`` late)."""
    earliest = now - walltime - START_SLACK if walltime else float("-inf")
    if scheduler_start is not None and earliest <= scheduler_start <= now + START_SLACK:
        block.started, block.start_from = min(scheduler_start, now), "scheduler"
    elif block.started is None:
        block.started, block.start_from = now, "first seen"
    if walltime and block.started is not None:
        block.ends = block.started + walltime


def ending(block: Block, now: float, lead: float) -> bool:
    return block.ends is not None and block.ends - now <= lead


def counted(state: PoolState, now: float) -> list[Block]:
    """Jobs that count toward the pool's size: alive, not being removed, not about to end."""
    return [b for b in state.alive_blocks() if not b.removing and not ending(b, now, state.lead)]


def whole_jobs(engines: int, per_job: int) -> int:
    return -(-max(engines, 0) // max(per_job, 1))


def adaptive_target(state: PoolState, obs: Observation, capacity: int) -> tuple[int, str]:
    """The size an adaptive pool wants now, and why ("" when it keeps its target)."""
    busy = sum(1 for e in obs.engines if e.busy)
    idle = [e for e in obs.engines if not e.busy]
    low, high = state.minimum, state.maximum
    current = min(high, max(low, state.target))
    if obs.unassigned and not idle:
        state.shrink_votes = 0
        want = min(high, max(low, busy + obs.unassigned))
        if want > max(current, capacity):
            return want, (f"{obs.unassigned} load-balanced task(s) wait and no engine is idle: grow to {want} "
                          f"(max {high}; {capacity} engine(s) counted, queued jobs included)")
        return current, ""
    long_idle = [e for e in idle if e.idle_for >= state.idle_timeout]
    if not obs.unassigned and long_idle and min(current, capacity) > low:
        state.shrink_votes += 1
        if state.shrink_votes >= state.wait_count:
            state.shrink_votes = 0
            want = max(low, min(current, capacity) - len(long_idle))
            return want, (f"{len(long_idle)} engine(s) idle for over {state.idle_timeout:g} s "
                          f"({state.wait_count} looks in a row): shrink to {want} (min {low})")
        return current, ""
    state.shrink_votes = 0
    return current, ""


def plan(state: PoolState, obs: Observation) -> Plan:
    """What to submit and cancel now. Updates ``state.target`` / ``shrink_votes``."""
    per_job = max(state.engines_per_job, 1)
    blocks = counted(state, obs.now)
    capacity = sum(b.engines for b in blocks)
    why = ""
    if state.adaptive:
        state.target, why = adaptive_target(state, obs, capacity)
    result = Plan(target=state.target)
    if why:
        result.reasons.append(why)
    want_jobs = whole_jobs(state.target, per_job)
    have_jobs = len(blocks)
    replaced = [b for b in state.alive_blocks() if not b.removing and ending(b, obs.now, state.lead)]
    if want_jobs > have_jobs:
        result.submit = want_jobs - have_jobs
        if replaced and not why:
            result.reasons.append(f"replace job(s) {', '.join(b.job_id for b in replaced)}: within "
                                  f"{state.lead:g} s of their walltime")
        elif not why:
            result.reasons.append(f"target {state.target} engines: {have_jobs} job(s) of {per_job} counted, "
                                  f"{want_jobs} wanted")
    elif want_jobs < have_jobs:
        result.cancel = removable(blocks, obs, have_jobs - want_jobs)
        if result.cancel:
            result.reasons.append(f"target {state.target} engines: {have_jobs} job(s) counted, {want_jobs} wanted")
        kept = have_jobs - want_jobs - len(result.cancel)
        if kept:
            result.next_change = f"{kept} job(s) to remove once their engines hold no work"
    soonest = min((b.ends for b in blocks if b.ends is not None), default=None)
    if not result.next_change and soonest is not None:
        result.next_change = f"replacement due {max(0.0, soonest - state.lead - obs.now):.0f} s from now"
    if result.submit:
        cap_to_max(state, result, replaced)
    return result


def cap_to_max(state: PoolState, result: Plan, replaced: list[Block]) -> None:
    """Submit only what fits under ``maximum`` (+ ``surge`` while replacing): every job
    still in the queue counts, the ones about to end and the ones being cancelled too."""
    if state.maximum <= 0:
        return
    per_job = max(state.engines_per_job, 1)
    occupied = sum(b.engines for b in state.alive_blocks())
    cap = state.maximum + (state.surge if replaced else 0)
    fits = max(0, cap - occupied) // per_job
    if fits >= result.submit:
        return
    held = result.submit - fits
    result.submit = fits
    extra = f" + surge {state.surge}" if replaced and state.surge else ""
    why = " (replacements wait for the jobs they replace to leave)" if replaced else ""
    result.next_change = (f"{held} job(s) of {per_job} wait for room under max {state.maximum}{extra}: "
                          f"{occupied} engine(s) in the queue{why}")


def removable(blocks: list[Block], obs: Observation, count: int) -> list[tuple[str, str]]:
    """Up to ``count`` jobs to cancel: queued ones first (newest first), then running ones
    whose engines are all idle (longest idle first). Never a job whose engines hold work."""
    engines_of: dict[str, list[EngineView]] = {}
    for e in obs.engines:
        engines_of.setdefault(job_key(e.job_id), []).append(e)
    pending = sorted((b for b in blocks if b.state != "running" and not engines_of.get(job_key(b.job_id))),
                     key=lambda b: -b.submitted)
    chosen = [(b.job_id, "still queued: not needed") for b in pending[:count]]
    if len(chosen) < count:
        idle_jobs = []
        for b in blocks:
            engines = engines_of.get(job_key(b.job_id), [])
            if b.state == "running" and engines and not any(e.busy for e in engines):
                idle_jobs.append((min(e.idle_for for e in engines), b))
        idle_jobs.sort(key=lambda t: -t[0])
        for idle_for, b in idle_jobs[: count - len(chosen)]:
            chosen.append((b.job_id, f"its engines are idle ({idle_for:.0f} s): not needed"))
    return chosen
