"""ipyparallel's LoadBalancedView, method by method and behaviour by behaviour (shared cluster)."""

from __future__ import annotations

import itertools
import os
import sys
import time

import cloudpickle
import pytest

import hpcpar as ipp

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import this module


def square(x):
    return x * x


def test_map_reads_an_iterator_once(rc):
    lb = rc.load_balanced_view()
    assert lb.map_sync(square, iter(range(10))) == [x * x for x in range(10)]


def test_map_reads_a_generator_once_with_chunks(rc):
    lb = rc.load_balanced_view()
    ar = lb.map_async(square, (x for x in range(10)), chunksize=3)
    assert len(ar.msg_ids) == 4 and len(ar) == 10
    assert ar.get(timeout=30) == [x * x for x in range(10)]


def test_map_unordered_iterates_in_completion_order(rc):
    lb = rc.load_balanced_view()
    ar = lb.map_async(lambda t: (time.sleep(t), t)[1], [0.6, 0.0], ordered=False)
    assert list(ar) == [0.0, 0.6]


def test_apply_flavours(rc):
    lb = rc.load_balanced_view()
    assert lb.apply_sync(pow, 2, 3) == 8
    ar = lb.apply_async(pow, 2, 4)
    assert isinstance(ar, ipp.AsyncResult) and ar.get(timeout=30) == 16
    lb.block = True
    assert lb.apply(pow, 3, 2) == 9


def test_targets_restrict_where_tasks_run(rc):
    lb = rc.load_balanced_view(targets=[0, 1])
    allowed = set(rc[[0, 1]].apply_sync(os.getpid))
    assert set(lb.map_sync(lambda _: os.getpid(), range(8))) <= allowed


def test_imap_is_lazy_over_an_endless_iterable(rc):
    lb = rc.load_balanced_view()
    drawn = itertools.count()
    it = lb.imap(square, (next(drawn) for _ in itertools.count()), max_outstanding=4)
    assert [next(it) for _ in range(5)] == [0, 1, 4, 9, 16]
    assert next(drawn) <= 12  # read only a few items ahead of the results taken


def test_imap_cancel_stops_reading_and_iterating(rc):
    lb = rc.load_balanced_view()
    drawn: list[int] = []

    def endless():
        for i in itertools.count():
            drawn.append(i)
            yield i

    it = lb.imap(lambda x: (time.sleep(0.05), x)[1], endless(), max_outstanding=4)
    assert next(it) == 0
    it.cancel()
    seen = len(drawn)
    assert list(it) == []
    assert len(drawn) == seen  # the input is no longer read
    assert lb.apply_sync(lambda: "still serving") == "still serving"


def test_dependency_flags(rc):
    lb = rc.load_balanced_view()
    first = lb.apply_async(time.sleep, 0.2)
    with lb.temp_flags(after=[first], follow=first, timeout=30, retries=1):
        second = lb.apply_async(os.getpid)
    pid = second.get(timeout=30)
    assert first.ready()
    assert pid == rc[first.metadata["engine_id"]].apply_sync(os.getpid)  # follow: same engine
    with pytest.raises(ValueError, match="retries"):
        lb.set_flags(retries=-1)


def test_abort_and_wait_through_the_view(rc):
    lb = rc.load_balanced_view(targets=[2])
    blocker = lb.apply_async(time.sleep, 1)
    queued = lb.apply_async(lambda: "ran")
    lb.abort(queued)
    with pytest.raises(ipp.RemoteError):
        queued.get(timeout=30)
    assert lb.wait(timeout=30) is True
    assert blocker.ready()


def test_len_is_the_engine_count(rc):
    assert len(rc.load_balanced_view()) == 4
    assert len(rc.load_balanced_view(targets=[1, 2])) == 2


def test_imap_unordered_yields_in_completion_order(rc):
    lb = rc.load_balanced_view()
    out = list(lb.imap(lambda t: (time.sleep(t), t)[1], [0.8, 0.0, 0.0], ordered=False, max_outstanding=3))
    assert out[-1] == 0.8 and sorted(out) == [0.0, 0.0, 0.8]


def test_imap_return_exceptions_yields_failures_in_place(rc):
    lb = rc.load_balanced_view()

    def inverse(x):
        return 1 / x

    out = list(lb.imap(inverse, [1, 0, 2], return_exceptions=True))
    assert out[0] == 1.0 and out[2] == 0.5
    assert isinstance(out[1], ipp.RemoteError) and out[1].ename == "ZeroDivisionError"
    with pytest.raises(ipp.RemoteError):
        list(lb.imap(inverse, [1, 0]))


def test_imap_max_outstanding_defaults_to_the_views_engine_count(rc):
    def counted(n, drawn):
        for i in range(n):
            drawn.append(i)
            yield i

    for view, in_flight in ((rc.load_balanced_view(), len(rc.ids)), (rc.load_balanced_view(targets=[0, 1]), 2)):
        drawn: list[int] = []
        it = view.imap(square, counted(20, drawn))  # max_outstanding="auto": len(view)
        assert len(drawn) == in_flight  # submitted from the call on, up to the limit
        assert next(it) == 0 and len(drawn) == in_flight
        assert list(it) == [x * x for x in range(1, 20)]
    drawn = []
    nap = lambda x: (time.sleep(1), x)[1]  # noqa: E731 - the tasks outlast the reading of the input
    it = rc.load_balanced_view().imap(nap, counted(8, drawn), max_outstanding=0)  # 0: no limit
    assert next(it) == 0 and len(drawn) == 8  # the whole input was submitted
    assert list(it) == list(range(1, 8))
    with pytest.raises(ValueError, match="max_outstanding"):
        rc.load_balanced_view().imap(square, [1], max_outstanding=-1)


def test_targets_are_resolved_and_checked_when_the_view_is_made(rc):
    """As ipyparallel: an unknown id raises IndexError at load_balanced_view(), -1 and slices
    become engine ids then; "all" is whatever engines exist when each task is sent."""
    with pytest.raises(IndexError):
        rc.load_balanced_view(targets=99)
    with pytest.raises(IndexError):
        rc.load_balanced_view(targets=[0, 99])
    assert rc.load_balanced_view(-1).targets == [rc.ids[-1]]
    assert rc.load_balanced_view(targets=slice(1, 3)).targets == rc.ids[1:3]
    assert rc.load_balanced_view(targets="all").targets is None
    assert rc.load_balanced_view(targets=2).apply_sync(os.getpid) == rc[2].apply_sync(os.getpid)
