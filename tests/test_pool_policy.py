"""The pool's policy as the pure function it is: whole jobs, queued jobs counted, never a
job whose engines hold work, replacements ahead of the walltime, adaptive bounds, back-off."""

from __future__ import annotations

from hpcpar.pool import backoff
from hpcpar.pool.policy import EngineView, Observation, job_key, plan
from hpcpar.pool.state import Block, PoolState

NOW = 1_000_000.0


def pool(**kw) -> PoolState:
    return PoolState(system="slurm", **{"engines_per_job": 1, "lead": 60.0, **kw})


def block(job: str, state: str = "running", ends: float | None = None, engines: int = 1) -> Block:
    return Block(job_id=job, system="slurm", engines=engines, submitted=NOW - 100, state=state, ends=ends)


def engine(eid: int, job: str, busy: bool = False, idle_for: float = 0.0) -> EngineView:
    return EngineView(eid, job, busy, 0.0 if busy else idle_for)


def test_scale_up_submits_whole_jobs_counting_queued_ones() -> None:
    st = pool(target=10, engines_per_job=4, blocks=[block("1", engines=4), block("2", "pending", engines=4)])
    p = plan(st, Observation(NOW, [engine(i, "1") for i in range(4)], 0))
    assert p.submit == 1 and not p.cancel  # ceil(10 / 4) = 3 jobs; 2 already count, queued one included


def test_scale_down_cancels_queued_then_idle_never_busy() -> None:
    st = pool(target=1, blocks=[block("1"), block("2"), block("3"), block("4", "pending")])
    obs = Observation(NOW, [engine(0, "1", busy=True), engine(1, "2", idle_for=5), engine(2, "3", idle_for=50)], 0)
    p = plan(st, obs)
    assert [j for j, _ in p.cancel] == ["4", "3", "2"][: len(p.cancel)]
    assert "1" not in [j for j, _ in p.cancel] and len(p.cancel) == 3
    busy_only = pool(target=0, blocks=[block("1")])
    p = plan(busy_only, Observation(NOW, [engine(0, "1", busy=True)], 0))
    assert p.cancel == [] and "once their engines hold no work" in p.next_change


def test_jobs_near_their_walltime_are_replaced_ahead() -> None:
    st = pool(target=2, blocks=[block("1", ends=NOW + 30), block("2", ends=NOW + 500)])
    p = plan(st, Observation(NOW, [engine(0, "1", busy=True), engine(1, "2", busy=True)], 0))
    assert p.submit == 1 and "replace job(s) 1: within 60 s of their walltime" in p.reasons[0]


def test_max_caps_every_job_in_the_queue_replacements_included_unless_surge() -> None:
    """max mirrors a QOS cap: ending, queued and cancelled jobs all count, so at max a
    replacement waits for the job it replaces to leave; surge allows the overlap."""
    def at_max(**kw) -> PoolState:
        return pool(target=2, maximum=2, blocks=[block("1", ends=NOW + 30), block("2", ends=NOW + 500)], **kw)

    busy = Observation(NOW, [engine(0, "1", busy=True), engine(1, "2", busy=True)], 0)
    p = plan(at_max(), busy)
    assert p.submit == 0 and "1 job(s) of 1 wait for room under max 2: 2 engine(s) in the queue" in p.next_change
    assert "replacements wait for the jobs they replace to leave" in p.next_change
    done = at_max()
    done.blocks[0].finished = NOW  # the old job left: its replacement goes in
    assert plan(done, Observation(NOW, [engine(1, "2", busy=True)], 0)).submit == 1
    assert plan(at_max(surge=1), busy).submit == 1  # one engine of overlap allowed
    # Below max the replacement goes in at once, as before.
    assert plan(pool(target=2, maximum=4, blocks=[block("1", ends=NOW + 30), block("2")]), busy).submit == 1
    # Whole jobs: max 5 with 2 engines per job holds 2 jobs, not 3; a job being cancelled still counts.
    st = pool(target=5, maximum=5, engines_per_job=2, blocks=[block("1", engines=2)])
    assert plan(st, Observation(NOW, [], 0)).submit == 1
    st = pool(target=2, maximum=2, blocks=[block("1"), block("2", "pending")])
    st.blocks[1].removing = "scale down"
    assert plan(st, Observation(NOW, [engine(0, "1", busy=True)], 0)).submit == 0
    # surge only applies to replacements, never to growth.
    st = pool(target=3, maximum=2, surge=4, blocks=[block("1"), block("2")])
    assert plan(st, Observation(NOW, [], 0)).submit == 0


def test_adaptive_grows_to_the_backlog_within_max_and_shrinks_to_min() -> None:
    st = pool(adaptive=True, minimum=1, maximum=5, target=2, blocks=[block("1"), block("2")])
    p = plan(st, Observation(NOW, [engine(0, "1", busy=True), engine(1, "2", busy=True)], 10))
    assert st.target == 5 and p.submit == 3 and "grow to 5 (max 5" in p.reasons[0]
    # A backlog while an engine is idle does not grow (the idle one takes the work).
    st = pool(adaptive=True, minimum=1, maximum=5, target=2, blocks=[block("1"), block("2")])
    assert plan(st, Observation(NOW, [engine(0, "1", busy=True), engine(1, "2")], 10)).submit == 0
    # Idle long enough, wait_count looks in a row: shrink, never below min.
    st = pool(adaptive=True, minimum=1, maximum=5, target=3, wait_count=2, idle_timeout=10,
              blocks=[block("1"), block("2"), block("3")])
    idle = Observation(NOW, [engine(i, str(i + 1), idle_for=60) for i in range(3)], 0)
    assert plan(st, idle).cancel == []  # first look: a vote only
    p = plan(st, idle)
    assert st.target == 1 and len(p.cancel) == 2 and "shrink to 1 (min 1)" in p.reasons[0]


def test_backoff_doubles_then_stops_with_the_output() -> None:
    st = pool(backoff=10, backoff_max=25, max_failures=3)
    b = block("7", "failed")
    assert "next submission in 10 s" in backoff.failed(st, b, NOW, "  | module: not found")
    assert backoff.may_submit(st, NOW + 5) == (False, "backing off for 5 s after 1 failure(s)")
    assert "next submission in 20 s" in backoff.failed(st, b, NOW, "")
    text = backoff.failed(st, b, NOW, "  | module: not found")
    assert st.stopped == text and "after 3 failed jobs in a row" in text and "module: not found" in text
    assert backoff.may_submit(st, NOW + 10_000)[0] is False
    backoff.succeeded(st)
    assert st.failures == 0


def test_job_ids_compare_on_their_number() -> None:
    assert job_key("123.server.domain") == job_key("123") == "123"
    assert job_key("45[].pbs") == "45" and job_key(None) == ""


def test_a_jobs_end_is_dated_from_the_schedulers_start_so_its_replacement_goes_out_on_time() -> None:
    """The pool first sees a job running up to one interval after it started; with the
    scheduler's start the replacement goes out ``lead`` seconds before the real end."""
    from hpcpar.pool.policy import date_start

    walltime, seen_at = 600.0, NOW
    job = block("1", ends=None)
    date_start(job, NOW - 545.0, seen_at, walltime)  # started 545 s ago: 55 s left, lead is 60
    assert (job.started, job.ends, job.start_from) == (NOW - 545.0, NOW + 55.0, "scheduler")
    p = plan(pool(target=1, blocks=[job]), Observation(NOW, [engine(0, "1", busy=True)], 0))
    assert p.submit == 1 and "replace job(s) 1" in p.reasons[0]
    late = block("1", ends=None)
    date_start(late, None, seen_at, walltime)  # no start from the scheduler: first seen
    assert (late.ends, late.start_from) == (NOW + walltime, "first seen")
    assert plan(pool(target=1, blocks=[late]), Observation(NOW, [engine(0, "1", busy=True)], 0)).submit == 0
    later = block("1", ends=None)
    date_start(later, None, NOW - 30, walltime)  # first seen without it, the scheduler's start comes later
    date_start(later, NOW - 40, NOW, walltime)
    assert later.start_from == "scheduler" and later.ends == NOW - 40 + walltime
    for implausible in (NOW + 3600, NOW - walltime - 3600):  # a zone off by an hour either way
        odd = block("1", ends=None)
        date_start(odd, implausible, NOW, walltime)
        assert (odd.started, odd.start_from) == (NOW, "first seen")
