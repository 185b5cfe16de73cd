"""ipyparallel's AsyncResult API on a real cluster: get/wait options, split/join, output,
metadata access, timing properties and map progress."""

from __future__ import annotations

import concurrent.futures
import sys
import time

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


def test_wait_return_when_first_completed_returns_done_and_pending(rc):
    fast = rc[0].apply_async(sleep_then, "fast", 0)
    slow = rc[1].apply_async(sleep_then, "slow", 3)
    both = ipp.AsyncResult.join(fast, slow)
    done, pending = both.wait(timeout=30, return_when=concurrent.futures.FIRST_COMPLETED)
    assert done == set(fast.msg_ids) and pending == set(slow.msg_ids)
    done, pending = both.wait(timeout=30, return_when=concurrent.futures.ALL_COMPLETED)
    assert done == set(both.msg_ids) and pending == set()
    assert both.wait(0) is True


def test_wait_return_when_first_exception_stops_at_a_failure(rc):
    failing = rc[0].apply_async(fail_on, 1, [1])
    slow = rc[1].apply_async(sleep_then, "slow", 3)
    both = ipp.AsyncResult.join(failing, slow)
    done, pending = both.wait(timeout=30, return_when=concurrent.futures.FIRST_EXCEPTION)
    assert done == set(failing.msg_ids) and pending == set(slow.msg_ids)
    with pytest.raises(ValueError, match="return_when"):
        both.wait(1, return_when="SOMETIMES")


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
    assert len(parts) == len(rc.ids) and [p.msg_ids[0] for p in parts] == ar.msg_ids
    done, _ = concurrent.futures.wait(parts, timeout=30)
    assert len(done) == len(parts)
    assert [p.get(timeout=30) for p in parts] == ["x"] * len(rc.ids)
    single = rc[0].apply_async(abs, -1)
    assert single.split() == (single,)


def test_split_map_parts_are_chunks_and_join_restores_the_map(rc):
    ar = rc.load_balanced_view().map_async(abs, [-1, -2, -3, -4], chunksize=2)
    parts = ar.split()
    assert [p.get(timeout=30) for p in parts] == [[1, 2], [3, 4]]
    joined = type(ar).join(*parts)
    assert joined.get(timeout=30) == [1, 2, 3, 4]


def test_join_of_plain_results_is_a_list(rc):
    a, b = rc[0].apply_async(abs, -1), rc[1].apply_async(abs, -2)
    joined = ipp.AsyncResult.join(a, b)
    assert joined.get(timeout=30) == [1, 2] and len(joined) == 2
    with pytest.raises(ValueError, match="at least one"):
        ipp.AsyncResult.join()


def test_wait_for_output_has_the_printed_output(rc):
    ar = rc[0].execute("print('hello from the engine')", block=False)
    assert ar.wait_for_output(timeout=30) is True
    assert "hello from the engine" in ar.stdout


def test_unknown_string_key_raises_key_error(rc):
    ar = rc[0].apply_async(abs, -1)
    ar.get(timeout=30)
    assert ar["engine_id"] == 0
    with pytest.raises(KeyError, match="unknown"):
        ar["unknown"]


def test_result_index_before_completion_raises_timeout_error(rc):
    ar = rc[:].apply_async(sleep_then, 1, 2)
    with pytest.raises(TimeoutError):
        ar[0]
    assert ar.get(timeout=30)[0] == 1 and ar[0] == 1


def test_wall_time_before_completion_raises_timeout_error(rc):
    ar = rc[0].apply_async(sleep_then, 1, 2)
    with pytest.raises(TimeoutError):
        _ = ar.wall_time
    with pytest.raises(TimeoutError):
        _ = ar.serial_time
    assert ar.elapsed >= 0
    ar.get(timeout=30)
    assert ar.wall_time > 0 and ar.serial_time > 0
    assert ar.elapsed == ar.wall_time


def test_map_progress_counts_items_like_len(rc):
    lb = rc.load_balanced_view()
    ar = lb.map_async(sleep_then, range(10), [0.0] * 10, chunksize=3)
    assert len(ar) == 10
    assert 0 <= ar.progress <= len(ar)
    ar.get(timeout=30)
    assert ar.progress == len(ar) == 10
    dv = rc[:].map_async(abs, range(-5, 0))
    dv.get(timeout=30)
    assert dv.progress == len(dv) == 5


def test_map_progress_is_in_items_while_running(rc):
    lb = rc.load_balanced_view(targets=[0])
    ar = lb.map_async(sleep_then, range(4), [0.0, 0.0, 0.0, 3.0], chunksize=3)
    deadline = time.monotonic() + 30
    while ar.progress == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ar.progress == 3  # the first chunk (3 items) is done, the second (1 item) is not
    ar.get(timeout=30)
    assert ar.progress == 4
