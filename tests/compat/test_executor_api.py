"""``view.executor``: a concurrent.futures.Executor over any view, as in ipyparallel."""

from __future__ import annotations

import concurrent.futures
import os
import sys

import cloudpickle
import pytest

import hpcpar as ipp

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import this module


def test_executor_is_a_property_returning_an_executor(rc):
    for view in (rc[:], rc.load_balanced_view(), rc.broadcast_view()):
        assert isinstance(view.executor, concurrent.futures.Executor)


def test_submit_returns_a_future_with_the_result(rc):
    fut = rc.load_balanced_view().executor.submit(pow, 3, 4)
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=30) == 81


def test_map_returns_results_in_order(rc):
    assert list(rc.load_balanced_view().executor.map(abs, iter([-1, -2, -3]))) == [1, 2, 3]
    assert list(rc[0].executor.map(abs, [-4, -5])) == [4, 5]


def test_futures_work_with_concurrent_futures_helpers(rc):
    ex = rc.load_balanced_view().executor
    futures = [ex.submit(pow, 2, i) for i in range(6)]
    done, not_done = concurrent.futures.wait(futures, timeout=30)
    assert not not_done
    assert sorted(f.result() for f in concurrent.futures.as_completed(futures, timeout=30)) == [2**i for i in range(6)]


def test_with_block_waits_and_leaves_engines_running(rc):
    with rc.load_balanced_view().executor as ex:
        fut = ex.submit(os.getpid)
    assert fut.done()
    assert len(set(rc[:].apply_sync(os.getpid))) == 4


def test_client_executor_takes_targets(rc):
    ex = rc.executor(targets=[3])
    assert ex.submit(os.getpid).result(timeout=30) == rc[3].apply_sync(os.getpid)


def test_client_wait_takes_executor_futures(rc):
    fut = rc[:].executor.submit(ipp.interactive(lambda: 1))
    assert rc.wait([fut], timeout=30) is True


def test_shutdown_cancel_futures_drops_tasks_not_started(rc):
    import time

    ex = rc[1].executor
    running = ex.submit(time.sleep, 1)
    queued = ex.submit(ipp.interactive(lambda: "ran"))
    ex.shutdown(wait=True, cancel_futures=True)
    assert running.done() and running.exception() is None
    assert isinstance(queued.exception(timeout=30), ipp.RemoteError)  # aborted before it started


def test_submit_after_shutdown_is_refused(rc):
    ex = rc.load_balanced_view().executor
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(int)


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def test_map_timeout_raises_timeouterror_from_the_iterator(rc):
    for view in (rc.load_balanced_view(), rc[:]):
        results = view.executor.map(nap, [0, 3], timeout=0.5)  # submitted now, deadline in 0.5 s
        with pytest.raises(TimeoutError):
            list(results)
    # A deadline that is met: the results, in order.
    assert list(rc.load_balanced_view().executor.map(nap, [0, 0.1], timeout=60)) == [0, 0.1]
    assert list(rc[:].executor.map(abs, [-1, -2], timeout=60)) == [1, 2]


def fail_on_two(x):
    if x == 2:
        raise ValueError("two")
    return x


def test_map_passes_imap_keyword_arguments_on_as_ipyparallel(rc):
    """ipyparallel's ViewExecutor.map hands extra keywords to the view's imap."""
    import time

    lb = rc.load_balanced_view().executor
    values = list(lb.map(fail_on_two, range(4), return_exceptions=True, max_outstanding=2))
    assert values[:2] == [0, 1] and values[3] == 3
    assert isinstance(values[2], ipp.RemoteError) and values[2].ename == "ValueError"
    assert list(lb.map(lambda t: (time.sleep(t), t)[1], [0.8, 0.0], ordered=False)) == [0.0, 0.8]
    assert list(lb.map(abs, [-1, -2, -3], chunksize=2, return_exceptions=True)) == [1, 2, 3]
    direct = list(rc[:2].executor.map(fail_on_two, [1, 2], return_exceptions=True))
    assert direct[0] == 1 and isinstance(direct[1], ipp.RemoteError)
    with pytest.raises(TypeError):
        list(lb.map(abs, [1], no_such_option=True))
