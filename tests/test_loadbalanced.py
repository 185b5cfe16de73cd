"""LoadBalancedView basics: apply, map with chunksize and ordering, lazy imap, executor."""

from __future__ import annotations

import itertools
import time

import pytest

import hpcpar


def pid_after(delay):
    import os
    import time

    time.sleep(delay)
    return os.getpid()


def test_apply_returns_scalar(rc):
    lb = rc.load_balanced_view()
    assert lb.apply_sync(pow, 2, 10) == 1024
    ar = lb.apply_async(pow, 3, 2)
    assert ar.get(timeout=10) == 9
    assert isinstance(ar.engine_id, int)


def test_blocking_apply_records_history_and_metadata(rc):
    lb = rc.load_balanced_view()
    assert lb.apply_sync(pow, 2, 3) == 8
    mid = lb.history[-1]
    assert rc.history[-1] == mid and mid not in rc.outstanding
    assert rc.metadata[mid]["engine_id"] in rc.ids and rc.metadata[mid]["status"] == "ok"
    with pytest.raises(hpcpar.RemoteError):
        lb.apply_sync(pow, 2, "x")


def test_work_spreads_over_all_engines(rc):
    lb = rc.load_balanced_view()
    pids = lb.map_sync(pid_after, [0.1] * 8)
    assert len(set(pids)) == 4


def test_map_chunksize_makes_one_task_per_chunk(rc):
    lb = rc.load_balanced_view()
    ar = lb.map_async(lambda x: x * x, range(100), chunksize=10)
    assert len(ar.msg_ids) == 10
    assert len(ar) == 100
    assert ar.get(timeout=30) == [x * x for x in range(100)]


def test_map_unordered_iteration_follows_completion(rc):
    lb = rc.load_balanced_view()
    delays = [0.6, 0.05, 0.05, 0.05]
    ar = lb.map_async(lambda d: (__import__("time").sleep(d), d)[1], delays, ordered=False)
    order = list(ar)
    assert sorted(order) == sorted(delays)
    assert order[-1] == 0.6
    assert ar.get(timeout=10) == delays  # get() keeps submission order


def test_imap_consumes_an_infinite_generator_lazily(rc):
    lb = rc.load_balanced_view()
    consumed = []

    def numbers():
        for i in itertools.count():
            consumed.append(i)
            yield i

    results = lb.imap(lambda x: x + 1, numbers(), max_outstanding=4)
    first = list(itertools.islice(results, 10))
    assert first == list(range(1, 11))
    assert len(consumed) <= 10 + 4  # never ran far ahead of what we asked for


def test_imap_unordered(rc):
    lb = rc.load_balanced_view()
    out = list(lb.imap(lambda x: x * 3, range(20), ordered=False))
    assert sorted(out) == [x * 3 for x in range(20)]


def test_targets_flag_restricts_engines(rc):
    lb = rc.load_balanced_view(targets=[1, 2])
    engines = {lb.apply_async(pid_after, 0.05).get(timeout=10) for _ in range(8)}
    allowed = set(rc[[1, 2]].apply_sync(pid_after, 0))
    assert engines <= allowed


def test_executor_is_a_futures_executor(rc):
    import concurrent.futures

    ex = rc.load_balanced_view().executor
    assert isinstance(ex, concurrent.futures.Executor)
    futs = [ex.submit(pow, 2, i) for i in range(5)]
    assert [f.result(timeout=10) for f in futs] == [1, 2, 4, 8, 16]
    assert list(ex.map(abs, [-1, -2])) == [1, 2]


def test_errors_in_map_are_raised(rc):
    lb = rc.load_balanced_view()
    with pytest.raises(hpcpar.CompositeError) as info:
        lb.map_sync(lambda x: 1 / x, [1, 0, 2])
    assert info.value.elist[0][0] == "ZeroDivisionError"


def test_tasks_wait_for_busy_engines_rather_than_fail(rc):
    lb = rc.load_balanced_view()
    start = time.monotonic()
    ars = [lb.apply_async(time.sleep, 0.2) for _ in range(8)]
    for ar in ars:
        ar.get(timeout=20)
    # 8 tasks of 0.2 s on 4 engines, one at a time each: at least two rounds.
    assert time.monotonic() - start >= 0.39
