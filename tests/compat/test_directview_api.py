"""ipyparallel's DirectView, method by method and behaviour by behaviour (shared cluster of 4 engines)."""

from __future__ import annotations

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
    assert rc[:].map_sync(square, iter(range(10))) == [x * x for x in range(10)]


def test_map_reads_a_generator_once(rc):
    assert rc[:].map_sync(square, (x for x in range(10))) == [x * x for x in range(10)]


def test_map_takes_any_iterable(rc):
    assert sorted(rc[:].map_sync(square, {1, 2, 3})) == [1, 4, 9]
    assert rc[:].map_sync(square, {"a": 2, "b": 3}.values()) == [4, 9]


def test_map_stops_at_the_shortest_sequence_like_builtin_map(rc):
    assert rc[:].map_sync(lambda a, b: (a, b), range(10), iter("abc")) == [(0, "a"), (1, "b"), (2, "c")]


def test_map_async_returns_an_async_map_result(rc):
    ar = rc[:].map_async(square, range(9))
    assert isinstance(ar, ipp.AsyncMapResult) and len(ar) == 9
    assert ar.get(timeout=30) == [x * x for x in range(9)]


def test_map_uses_every_engine(rc):
    pids = rc[:].map_sync(lambda _: os.getpid(), range(8))
    assert len(set(pids)) == 4


def test_apply_follows_block_and_single_engine_views_give_one_value(rc):
    view = rc[:]
    view.block = False
    assert isinstance(view.apply(lambda: 1), ipp.AsyncResult)
    view.block = True
    assert view.apply(lambda: 1) == [1] * 4
    assert rc[0].apply_sync(lambda: 2) == 2
    assert rc[0].apply_async(lambda: 3).get(timeout=30) == 3


def test_execute_and_run(rc, tmp_path):
    view = rc[:]
    view.execute("a = 5", block=True)
    assert view.pull("a", block=True) == [5] * 4
    script = tmp_path / "script.py"
    script.write_text("b = a + 1\n")
    view.run(script, block=True)
    assert view.pull("b", block=True) == [6] * 4


def test_push_pull_and_update(rc):
    view = rc[:]
    view.push({"x": 1, "y": "two"}, block=True)
    assert view.pull("x", block=True) == [1] * 4
    assert view.pull(["x", "y"], block=True) == [[1, "two"]] * 4
    view.update({"x": 3})
    view.wait(timeout=30)
    assert view.pull("x", block=True) == [3] * 4


def test_get_always_blocks(rc):
    view = rc[:]
    view.push({"z": 9}, block=True)
    view.block = False
    assert view.get("z") == [9] * 4
    assert rc[1].get(["z"]) == [9]


def test_item_access_pushes_and_pulls(rc):
    view = rc[:]
    view["w"] = [1, 2]
    assert view["w"] == [[1, 2]] * 4


def test_scatter_and_gather(rc):
    view = rc[:]
    view.scatter("part", list(range(10)), block=True)
    assert view.pull("part", block=True) == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert view.gather("part", block=True) == list(range(10))
    view.scatter("one", rc.ids, flatten=True, block=True)
    assert view.pull("one", block=True) == rc.ids


def test_a_target_list_naming_an_engine_twice_runs_it_twice(rc):
    rc[:].execute("calls = []", block=True)
    count = ipp.interactive(lambda x: (calls.append(x), len(calls))[1])  # noqa: F821
    assert rc[[0, 1, 0]].apply_sync(count, 7) == [1, 1, 2]
    assert rc[0]["calls"] == [7, 7]
    assert rc[[2, 2]].apply_async(count, 8).get(timeout=30) == [1, 2]


def test_use_pickle_keeps_lambdas_and_closures_working(rc):
    view = rc[:]
    factor = 3
    view.use_pickle()
    try:
        assert view.apply_sync(lambda: factor * 2) == [6] * 4
        assert view.map_sync(lambda x: x * factor, range(4)) == [0, 3, 6, 9]
    finally:
        view.use_cloudpickle()


def test_imap_iterates_results_and_cancel_stops_it(rc):
    it = rc[:].imap(square, range(8))
    assert next(it) == 0
    assert [next(it) for _ in range(3)] == [1, 4, 9]
    it.cancel()
    assert list(it) == []


def test_wait_and_outstanding(rc):
    view = rc[:]
    ar = view.apply_async(time.sleep, 0.3)
    assert set(ar.msg_ids) <= view.outstanding | set(ar.msg_ids)
    assert view.wait(timeout=30) is True
    assert not view.outstanding


def test_abort_through_the_view(rc):
    view = rc[1]
    blocker = view.apply_async(time.sleep, 1)
    queued = view.apply_async(lambda: "ran")
    view.abort(queued)
    with pytest.raises(ipp.RemoteError):
        queued.get(timeout=30)
    blocker.get(timeout=30)


def test_clear_through_the_view(rc):
    view = rc[:]
    view["gone"] = 1
    view.clear(block=True)
    with pytest.raises(ipp.CompositeError):
        view.pull("gone", block=True)


def test_queue_status_through_the_view(rc):
    status = rc[:].queue_status()
    assert set(rc.ids) <= set(status)


def test_sync_imports(rc):
    view = rc[:]
    with view.sync_imports(quiet=True):
        import json  # noqa: F401
    assert view.apply_sync(ipp.interactive(lambda: json.dumps([1]))) == ["[1]"] * 4  # noqa: F821


def test_set_flags_and_temp_flags(rc):
    view = rc[:]
    view.set_flags(block=True, targets=[0, 1])
    assert view.apply(lambda: 1) == [1, 1]
    with view.temp_flags(targets=2):
        assert view.apply(lambda: 1) == 1
    assert view.targets == [0, 1]
    with pytest.raises(KeyError, match="invalid flag"):
        view.set_flags(nonsense=1)


def test_len_and_targets(rc):
    assert len(rc[:]) == 4 and len(rc[1:3]) == 2
    view = rc[[0, 2]]
    assert view.targets == [0, 2]
    view.targets = 3
    assert view.apply_sync(lambda: 1) == 1


def test_queue_status_defaults_to_the_views_engines(rc):
    assert set(rc[[1, 2]].queue_status()) == {1, 2, "unassigned"}
    assert "queue" in rc[3].queue_status()


def test_result_status_and_purge_results_through_the_view(rc):
    view = rc[0]
    ar = view.apply_async(lambda: 1)
    ar.get(timeout=30)
    assert view.result_status(ar.msg_ids)["completed"] == ar.msg_ids
    view.purge_results(ar)
    assert ar.msg_ids[0] not in rc.results


def test_get_result_through_the_view(rc):
    view = rc[1]
    ar = view.apply_async(lambda: "again")
    ar.get(timeout=30)
    assert view.get_result(ar.msg_ids).get(timeout=30) == ["again"]  # a list of ids gives a list
    assert view.get_result(ar.msg_ids[0]).get(timeout=30) == "again"


def test_spin_is_harmless(rc):
    rc[:].spin()
    rc.load_balanced_view().spin()


def test_shutdown_through_a_view(private_cluster):
    _, rc = private_cluster
    victim = rc.ids[-1]
    rc[victim].shutdown(block=True)
    deadline = time.monotonic() + 30
    while victim in rc.ids and time.monotonic() < deadline:
        time.sleep(0.1)
    assert victim not in rc.ids and rc.ids


# -- BroadcastView: a DirectView, so every method above works through it too -----------------


def test_broadcast_view_apply_execute_push_pull(rc):
    bv = rc.broadcast_view()
    bv.execute("bx = 2", block=True)
    bv.push({"by": 3}, block=True)
    assert bv.pull(["bx", "by"], block=True) == [[2, 3]] * 4
    assert bv.apply_sync(ipp.interactive(lambda: bx * by)) == [6] * 4  # noqa: F821


def test_broadcast_view_map_scatter_gather(rc):
    bv = rc.broadcast_view(is_coalescing=True)
    assert bv.map_sync(square, iter(range(6))) == [0, 1, 4, 9, 16, 25]
    bv.scatter("bpart", range(8), block=True)
    assert bv.gather("bpart", block=True) == list(range(8))


def test_broadcast_results_metadata_say_so(rc):
    ar = rc.broadcast_view(is_coalescing=True).apply_async(abs, -1)
    assert ar.get(timeout=30) == [1] * len(rc.ids)
    assert ar.is_broadcast == [True] * len(rc.ids) and ar["is_coalescing"] == [True] * len(rc.ids)
    plain = rc[:].apply_async(abs, -1)
    plain.get(timeout=30)
    assert plain.is_broadcast == [False] * len(rc.ids) and plain.metadata[0]["is_coalescing"] is False


def test_broadcast_view_of_some_engines(rc):
    bv = rc.broadcast_view(targets=[0, 3])
    assert bv.targets == [0, 3]
    assert bv.apply_sync(os.getpid) == rc[[0, 3]].apply_sync(os.getpid)


def test_scatter_and_gather_round_robin(rc):
    view = rc[:]
    view.scatter("rr", list(range(10)), dist="r", block=True)
    assert view.pull("rr", block=True) == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]
    assert view.gather("rr", dist="r", block=True) == list(range(10))
    with pytest.raises(ValueError, match="round robin"):
        view.scatter("rr", [1], dist="x")


def test_scatter_and_gather_numpy_arrays_round_robin(rc):
    np = pytest.importorskip("numpy")
    view = rc[:]
    data = np.arange(18.0).reshape(9, 2)
    view.scatter("arr", data, dist="r", block=True)
    assert view.pull("arr", block=True)[1].tolist() == data[1::4].tolist()
    back = view.gather("arr", dist="r", block=True)
    assert back.dtype == data.dtype and (back == data).all()


def test_send_signal_through_the_view(rc, tmp_path):
    import signal

    started = tmp_path / "started"

    def sleeper(path):
        open(path, "w").close()
        time.sleep(30)

    view = rc[2]
    ar = view.apply_async(sleeper, str(started))
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    view.send_signal(signal.SIGINT, block=True)
    with pytest.raises(ipp.RemoteError) as info:
        ar.get(timeout=30)
    assert info.value.ename == "KeyboardInterrupt"


def test_view_history_outstanding_and_results(rc):
    view = rc[[0, 1]]
    ar = view.apply_async(lambda: 4)
    assert view.history[-2:] == ar.msg_ids
    ar.get(timeout=30)
    assert not (view.outstanding & set(ar.msg_ids))
    assert [view.results[m] for m in ar.msg_ids] == [4, 4]


def test_map_with_fewer_items_than_engines_sends_no_empty_calls(rc):
    ar = rc[:].map_async(square, [3, 4])
    assert len(ar.msg_ids) == 2
    assert ar.get(timeout=30) == [9, 16]
    assert rc[:].map_sync(square, []) == []


def test_scatter_of_a_range_gives_each_engine_a_range(rc):
    """ipyparallel slices the sequence it scatters: a range's parts are ranges."""
    view = rc[:]
    n = len(view)
    view.scatter("rpart", range(10), block=True)
    parts = view.pull("rpart", block=True)
    assert all(isinstance(p, range) for p in parts)
    assert [list(p) for p in parts] == [list(range(10))[lo:hi] for lo, hi in _blocks(10, n)]
    assert view.gather("rpart", block=True) == list(range(10))
    view.scatter("rr", range(10), dist="r", block=True)
    assert view.pull("rr", block=True) == [range(10)[i::n] for i in range(n)]
    assert view.gather("rr", dist="r", block=True) == list(range(10))


def _blocks(length, n):
    q, r = divmod(length, n)
    start = 0
    for i in range(n):
        stop = start + q + (1 if i < r else 0)
        yield start, stop
        start = stop
