"""ipyparallel's AsyncResult API on a real cluster: get/wait options, split/join, output,
metadata access, timing properties and map progress."""

from __future__ import annotations

import concurrent.futures
import sys

import cloudpickle
import pytest

import hpcpar as ipp

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import this module


def fail_on(x, bad):
    if x in bad:
        raise ValueError(f"bad {x}")
    return x * 10


def sleep_then(x, delay):
    import time

    time.sleep(delay)
    return x


def test_get_return_exceptions_returns_failures_in_place(rc):
    lb = rc.load_balanced_view()
    ar = lb.map_async(fail_on, range(4), [[1, 3]] * 4, chunksize=1)
    with pytest.raises(ipp.CompositeError):
        ar.get(timeout=30)
    values = ar.get(timeout=30, return_exceptions=True)
    assert values[0] == 0 and values[2] == 20
    assert isinstance(values[1], ipp.RemoteError) and values[1].ename == "ValueError"
    assert isinstance(values[3], ipp.RemoteError) and "bad 3" in values[3].evalue


def test_single_get_return_exceptions_returns_the_error(rc):
    ar = rc[0].apply_async(fail_on, 1, [1])
    err = ar.get(timeout=30, return_exceptions=True)
    assert isinstance(err, ipp.RemoteError) and err.evalue == "bad 1"


def test_map_return_exceptions_true_is_honoured_by_get(rc):
    lb = rc.load_balanced_view()
    values = lb.map_sync(fail_on, range(3), [[1]] * 3, chunksize=1, return_exceptions=True)
    assert values[0] == 0 and values[2] == 20 and isinstance(values[1], ipp.RemoteError)
    ar = rc[:].map_async(fail_on, range(8), [[5]] * 8, return_exceptions=True)
    mixed = ar.get(timeout=30)
    assert any(isinstance(v, ipp.RemoteError) for v in mixed)  # the failed engine's chunk, in place
    assert 0 in mixed and 70 in mixed


def test_wait_return_when_returns_sets_of_the_split_results(rc):
    fast = rc[0].apply_async(sleep_then, "fast", 0)
    slow = rc[1].apply_async(sleep_then, "slow", 3)
    both = ipp.AsyncResult.join(fast, slow)
    first, second = both.split()
    done, pending = both.wait(timeout=30, return_when=concurrent.futures.FIRST_COMPLETED)
    # ipyparallel 9: two sets of AsyncResults (the parts of split()), not of msg_ids
    assert done == {first} and pending == {second}
    assert [ar.get() for ar in done] == ["fast"] and first.msg_ids == fast.msg_ids
    done, pending = both.wait(timeout=30, return_when=concurrent.futures.ALL_COMPLETED)
    assert done == {first, second} and pending == set()
    assert both.wait(0) is True
    single = rc[2].apply_async(abs, -3)
    assert single.wait(30, return_when=concurrent.futures.FIRST_COMPLETED) == ({single}, set())


def test_wait_return_when_first_exception_stops_at_a_failure(rc):
    failing = rc[0].apply_async(fail_on, 1, [1])
    slow = rc[1].apply_async(sleep_then, "slow", 3)
    both = ipp.AsyncResult.join(failing, slow)
    done, pending = both.wait(timeout=30, return_when=concurrent.futures.FIRST_EXCEPTION)
    assert [p.msg_ids for p in done] == [failing.msg_ids] and [p.msg_ids for p in pending] == [slow.msg_ids]
    (failed,) = done
    assert not failed.successful()
    with pytest.raises(ValueError, match="return_when"):
        both.wait(1, return_when="SOMETIMES")


def test_successful_and_abort_raise_runtimeerror_as_in_ipyparallel_9(rc):
    ar = rc[0].apply_async(sleep_then, "x", 1)
    with pytest.raises(RuntimeError, match="ready"):
        ar.successful()
    assert ar.get(timeout=30) == "x" and ar.successful()
    with pytest.raises(RuntimeError, match="already done"):
        ar.abort()


def test_get_return_when_first_exception_raises_before_all_finish(rc):
    lb = rc.load_balanced_view()
    with lb.temp_flags(targets=[0]):
        failing = lb.apply_async(fail_on, 1, [1])
    with lb.temp_flags(targets=[1]):
        slow = lb.apply_async(sleep_then, "slow", 5)
    both = ipp.AsyncResult.join(failing, slow)
    with pytest.raises(ipp.RemoteError, match="bad 1"):
        both.get(timeout=30, return_when=concurrent.futures.FIRST_EXCEPTION)
    assert not slow.ready()  # raised without waiting for the slow task
    assert slow.get(timeout=30) == "slow"


def test_split_gives_one_future_per_message(rc):
    ar = rc[:].apply_async(sleep_then, "x", 0)
    parts = ar.split()
    assert isinstance(parts, tuple) and ar.split() is parts  # the same parts every time
    assert len(parts) == len(rc.ids) and [p.msg_ids[0] for p in parts] == ar.msg_ids
    done, _ = concurrent.futures.wait(parts, timeout=30)
    assert len(done) == len(parts)
    assert [p.get(timeout=30) for p in parts] == ["x"] * len(rc.ids)
    single = rc[0].apply_async(abs, -1)
    assert single.split() == (single,)
    assert ipp.AsyncResult.join(single) is single  # one result is returned as it is
    assert ipp.AsyncResult.join(*parts).get(timeout=30) == ["x"] * len(rc.ids)


def test_split_map_parts_are_chunks_and_join_restores_the_map(rc):
    ar = rc.load_balanced_view().map_async(abs, [-1, -2, -3, -4], chunksize=2)
    parts = ar.split()
    # As in ipyparallel 9: each part is a plain AsyncResult of one message, whose result is its chunk.
    assert all(type(p) is ipp.AsyncResult for p in parts)
    assert [p.get(timeout=30) for p in parts] == [[[1, 2]], [[3, 4]]]
    assert ipp.AsyncResult.join(*parts).get(timeout=30) == [[1, 2], [3, 4]]
    joined = type(ar).join(*parts)  # the map back
    assert isinstance(joined, ipp.AsyncMapResult) and joined.get(timeout=30) == [1, 2, 3, 4] and len(joined) == 4


def _print_then_return(n, delay):
    import sys
    import time

    time.sleep(delay)
    for i in range(n):
        print(f"line {i}")
    sys.stdout.flush()
    return n


def test_wait_for_output_returns_when_every_line_is_there(rc):
    """ipyparallel's wait_for_output(timeout): True once the output is complete (all of
    stdout, not just the result), False when the timeout passes first."""
    ar = rc[0].apply_async(_print_then_return, 2000, 1.0)
    assert ar.wait_for_output(0) is False  # still sleeping
    assert ar.wait_for_output(60) is True
    assert ar.stdout.splitlines() == [f"line {i}" for i in range(2000)]
    assert ar.get() == 2000


def test_a_single_result_is_not_iterable_as_in_ipyparallel(rc):
    """One engine by id, a load-balanced apply and a split part are single results: iterating
    them raises TypeError (ipyparallel 9.2); lists of engines and maps iterate their values."""
    for ar in (rc[0].apply_async(lambda: [1, 2]), rc.load_balanced_view().apply_async(lambda: [1, 2]),
               rc[:2].apply_async(lambda: 3).split()[0]):
        assert ar.get(timeout=30) in ([1, 2], 3)
        with pytest.raises(TypeError, match="single result"):
            list(ar)
    assert list(rc[[0]].apply_async(lambda: [1, 2])) == [[1, 2]]
    assert list(rc[0].map_async(lambda x: x + 1, [1, 2])) == [2, 3]
    assert list(rc.load_balanced_view().map_async(lambda x: x + 1, [5])) == [6]
    assert list(rc.get_result(rc[0].apply_async(lambda: 4).msg_ids)) == [4]


def test_stream_output_prints_engine_output_with_its_prefix_including_what_came_before(rc, capsys):
    """ipyparallel 9.2's one streaming method is ``stream_output()`` (there is no
    ``stream_outputs``): a context manager that prints each engine's output as
    ``[stdout:N]`` while it runs, starting with what had already arrived."""
    assert not hasattr(ipp.AsyncResult, "stream_outputs")
    early = rc[0].execute("print('before-listening')")
    early.get(timeout=30)
    early.wait_for_output(timeout=30)
    with early.stream_output():
        pass
    ar = rc[:2].execute("import time; print('first'); time.sleep(0.5); print('second')")
    with ar.stream_output():
        ar.get(timeout=30)
        ar.wait_for_output(timeout=30)
    out = capsys.readouterr().out
    assert "[stdout:0]" in out and "before-listening" in out
    assert "[stdout:1]" in out and out.count("second") == 2 and out.index("first") < out.index("second")
