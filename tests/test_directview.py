"""DirectView: apply, map, execute, run, push/pull, scatter/gather, decorators, flags."""

from __future__ import annotations

import numpy as np
import pytest

import hpcpar


def add(a, b=0):
    return a + b


def test_apply_flavours(rc):
    view = rc[:]
    assert view.apply_sync(add, 1, b=2) == [3, 3, 3, 3]
    ar = view.apply_async(add, 2, 3)
    assert isinstance(ar, hpcpar.AsyncResult)
    assert ar.get(timeout=10) == [5, 5, 5, 5]
    view.block = True
    assert view.apply(add, 1) == [1, 1, 1, 1]
    view.block = False
    assert view.apply(add, 1).get(timeout=10) == [1, 1, 1, 1]


def test_blocking_call_records_what_an_async_one_does(rc):
    """A blocking call makes no AsyncResult; its history, metadata and result are kept all the same."""
    from datetime import datetime

    view = rc[1]
    assert view.apply_sync(add, 2, b=5) == 7
    mid = view.history[-1]
    assert rc.history[-1] == mid and mid not in rc.outstanding
    md = rc.metadata[mid]
    assert md["engine_id"] == 1 and md["status"] == "ok"
    assert all(isinstance(md[k], datetime) for k in ("submitted", "started", "completed", "received"))
    assert md["submitted"] <= md["received"]
    assert rc.get_result(mid).get(timeout=10) == 7
    with pytest.raises(hpcpar.RemoteError):  # one engine named by an int: its own error, not a CompositeError
        view.apply_sync(add, 1, "x")
    assert rc.metadata[view.history[-1]]["status"] == "error"
    assert rc[[1]].apply_sync(add, 1, 1) == [2]
    with pytest.raises(hpcpar.CompositeError):
        rc[[1]].apply_sync(add, 1, "x")
    assert rc[[0, 1]].push({"pushed": 3}, block=True) == [None, None]
    assert rc[1].pull("pushed", block=True) == 3


def test_lambdas_and_closures_travel(rc):
    k = 10

    def closure(x):
        return x * k

    assert rc[0].apply_sync(closure, 4) == 40
    assert rc[0].apply_sync(lambda x: x + 1, 1) == 2


def test_map_splits_across_engines(rc):
    view = rc[:]
    assert view.map_sync(lambda x: x * 2, range(10)) == [x * 2 for x in range(10)]
    assert view.map_sync(add, [1, 2, 3], [10, 20, 30]) == [11, 22, 33]
    ar = view.map_async(lambda x: __import__("os").getpid(), range(8))
    pids = ar.get(timeout=10)
    assert len(set(pids)) == 4  # every engine got a contiguous block of two
    assert pids[0] == pids[1] and pids[6] == pids[7]
    assert len(ar) == 8
    assert view.map_sync(lambda x: x, []) == []


def test_execute_and_run(rc, tmp_path):
    view = rc[:]
    ar = view.execute("import os\nmypid = os.getpid()\nprint('hi', mypid)", block=True)
    assert isinstance(ar, hpcpar.AsyncResult)
    pids = view.pull("mypid", block=True)
    assert ar.stdout == [f"hi {p}\n" for p in pids]
    script = tmp_path / "script.py"
    script.write_text("value = 6 * 7\n")
    view.run(script, block=True)
    assert view.pull("value", block=True) == [42] * 4
    ar = rc[0].execute("value + 1", silent=False, block=True)
    assert ar.execute_result["data"] == {"text/plain": "43"}


def test_execute_error_is_raised_when_blocking(rc):
    with pytest.raises(hpcpar.CompositeError) as info:
        rc[:].execute("1/0", block=True)
    assert len(info.value.elist) == 4
    assert "ZeroDivisionError" in str(info.value)
    with pytest.raises(hpcpar.RemoteError) as one:
        rc[0].execute("undefined_name", block=True)
    assert one.value.ename == "NameError"
    assert "undefined_name" in one.value.traceback and "hpcpar" not in one.value.traceback


def test_push_pull_and_item_access(rc):
    view = rc[:]
    view.block = True
    view.push({"a": 1, "b": "two"})
    assert view.pull("a") == [1, 1, 1, 1]
    assert view.pull(["a", "b"]) == [[1, "two"]] * 4
    view["c"] = [1, 2]
    assert view["c"] == [[1, 2]] * 4
    assert rc[1]["c"] == [1, 2]
    assert rc[1].pull("a", block=True) == 1
    with pytest.raises(hpcpar.RemoteError, match="nope"):
        rc[0].pull("nope", block=True)


def test_pushed_names_are_globals_for_interactive_functions(rc):
    view = rc[:]
    view.push({"offset": 100}, block=True)

    @hpcpar.interactive  # as if defined in a notebook or script (__main__)
    def uses_offset(x):
        return x + offset  # noqa: F821 - defined on the engines by push

    assert view.apply_sync(uses_offset, 1) == [101] * 4

    @hpcpar.interactive
    def set_global(v):
        global assigned
        assigned = v

    rc[0].apply_sync(set_global, 9)
    assert rc[0].pull("assigned", block=True) == 9


def test_push_pull_numpy_keeps_dtype_shape_and_is_zero_copy_writable(rc):
    a = np.arange(24, dtype=np.float32).reshape(4, 6)
    rc[0].push({"arr": a}, block=True)
    describe = hpcpar.interactive(lambda: (arr.dtype.str, arr.shape, arr.flags.writeable))  # noqa: F821
    assert rc[0].apply_sync(describe) == (a.dtype.str, (4, 6), True)
    back = rc[0].pull("arr", block=True)
    assert back.dtype == np.float32 and back.shape == (4, 6)
    np.testing.assert_array_equal(back, a)
    back += 1  # received arrays are writable
    f = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    rc[0].push({"f": f}, block=True)
    np.testing.assert_array_equal(rc[0].pull("f", block=True), f)


def test_numpy_buffers_are_separate_frames_not_pickled():
    from hpcpar import serialize

    a = np.zeros(1_000_000)
    payload, buffers = serialize.dumps({"a": a})
    assert len(payload) < 1000
    assert len(buffers) == 1 and buffers[0].nbytes == a.nbytes
    assert serialize.loads(payload, buffers)["a"].shape == a.shape


@pytest.mark.parametrize("seq", [
    list(range(10)),
    tuple(range(7)),
    np.arange(10.0),
    np.arange(30, dtype=np.int16).reshape(10, 3),
    list(range(3)),  # fewer items than engines
])
def test_scatter_gather_roundtrip(rc, seq):
    view = rc[:]
    view.scatter("part", seq, block=True)
    parts = view.pull("part", block=True)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(seq)
    back = view.gather("part", block=True)
    if isinstance(seq, np.ndarray):
        assert back.dtype == seq.dtype and back.shape == seq.shape
        np.testing.assert_array_equal(back, seq)
    else:
        assert back == list(seq)  # a list, as ipyparallel's gather gives, also for a scattered tuple


def test_scatter_flatten(rc):
    view = rc[:]
    view.scatter("x", [10, 20, 30, 40], flatten=True, block=True)
    assert view.pull("x", block=True) == [10, 20, 30, 40]


def test_sync_imports(rc, capsys):
    view = rc[:]
    with view.sync_imports():
        import json  # noqa: F401
    assert "importing json on engine(s)" in capsys.readouterr().out
    assert view.apply_sync(hpcpar.interactive(lambda: "json" in globals())) == [True] * 4


def test_remote_and_parallel_decorators(rc):
    view = rc[:]

    @view.remote(block=True)
    def where():
        import os
        return os.getpid()

    assert len(set(where())) == 4

    @view.parallel(block=True)
    def double(x):
        return [v * 2 for v in x]  # called once per engine, on its part

    assert double(range(8)) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert double.map([[1], [2, 3]]) == [[2], [4, 6]]  # .map: once per element


def test_flags(rc):
    view = rc[:]
    view.set_flags(block=True, targets=[0, 1])
    assert view.apply(lambda: 1) == [1, 1]
    with view.temp_flags(targets=2, block=False):
        assert isinstance(view.apply(lambda: 1), hpcpar.AsyncResult)
    assert view.targets == [0, 1] and view.block is True
    with pytest.raises(KeyError, match="invalid flag"):
        view.set_flags(bogus=1)


def test_view_wait_and_abort(rc):
    import time
    view = rc[3]
    ar = view.apply_async(time.sleep, 0.5)
    assert view.wait(timeout=0.01) is False
    assert view.wait(timeout=10) is True
    assert ar.ready()


def test_use_pickle_restores_the_default_serializer(rc):
    view = rc[0]
    view.use_pickle()
    # As in ipyparallel, use_pickle() means the default serialization: functions from
    # modules, lambdas and closures all still reach the engine.
    assert view.apply_sync(__import__("math").sqrt, 16.0) == 4.0
    assert view.apply_sync(_module_level_helper) == 1
    k = 4
    assert view.apply_sync(lambda: k + 1) == 5
    view.use_cloudpickle()
    assert view.apply_sync(lambda: 5) == 5


def _module_level_helper():
    return 1


def test_broadcast_replies_come_back_as_one_message(rc):
    seen = []
    original = rc._transport._on_frames

    def counting(frames):
        seen.append(len(frames))
        original(frames)

    rc._transport._on_frames = counting
    try:
        assert rc[:].apply_sync(pow, 2, 3) == [8, 8, 8, 8]
        assert len(seen) == 1  # one message for four replies
        seen.clear()
        with pytest.raises(hpcpar.CompositeError) as info:  # errors travel in the same message
            rc[:].apply_sync(lambda: 1 / 0)
        assert len(info.value.elist) == 4 and len(seen) == 1
        seen.clear()
        assert rc[:].apply_async(pow, 2, 2).get(timeout=10) == [4, 4, 4, 4]
        assert len(seen) == 4  # non-blocking: one per engine, results arrive as they finish
        seen.clear()
        view = rc.broadcast_view(is_coalescing=True)
        assert view.apply_async(pow, 2, 2).get(timeout=10) == [4, 4, 4, 4]
        assert len(seen) == 1
        seen.clear()
        view.set_flags(coalesce=False)
        assert view.apply_sync(pow, 2, 2) == [4, 4, 4, 4]
        assert len(seen) == 4
    finally:
        rc._transport._on_frames = original


LIMIT = 1


def test_a_function_sent_again_sees_the_globals_of_each_call(rc):
    # The client reuses the pickle of an unchanged function; a rebound global it
    # uses, or a mutated list, must still reach the engine.
    global LIMIT

    @hpcpar.interactive
    def read_limit():
        return LIMIT

    try:
        assert rc[0].apply_sync(read_limit) == 1
        LIMIT = 2
        assert rc[0].apply_sync(read_limit) == 2
        LIMIT = [3]
        assert rc[0].apply_sync(read_limit) == [3]
        LIMIT.append(4)
        assert rc[0].apply_sync(read_limit) == [3, 4]
    finally:
        LIMIT = 1


def test_target_sets_are_compact_and_checked():
    from hpcpar import targetset

    assert targetset.compact(list(range(5000))) == [[0, 4999]]
    assert targetset.compact(list(range(0, 5000, 2))) == [[0, 4998, 2]]
    assert targetset.compact([7, 1, 2, 3, 9, 4]) == [7, [1, 3], 9, 4]
    for ids in ([3], [0, 1], [5, 4, 3, 2], [1, 2, 3, 10, 20, 30, 31], list(range(0, 30, 3)) + [99]):
        assert targetset.expand(targetset.compact(ids)) == ids
    for bad, why in [([], "non-empty"), ([[3, 1]], "first <= last"), ([-1], "int >= 0"), (["0"], "int >= 0"),
                     ([[0, 5, 0]], "step > 0"), ([[0, 1 << 40]], "more than"), ([1, [0, 2]], "engine 1 twice"),
                     (None, "non-empty")]:
        with pytest.raises(ValueError, match=why):
            targetset.expand(bad)
    ids = [targetset.task_id("ab" * 16, e) for e in (0, 1, 10, 11)]
    assert len(set(ids)) == 4


def test_broadcast_msg_ids_are_unique_and_each_routable(rc):
    """Each target's msg_id is derived from the request's one base id: abort, get_result and
    resubmit still address exactly one engine's part."""
    import os
    import time

    busy = rc[:].apply_async(time.sleep, 1.0)  # holds every engine while we abort below
    ar = rc[:].apply_async(os.getpid)
    assert len(set(ar.msg_ids)) == len(rc.ids) == 4
    assert [rc.metadata[m]["engine_id"] for m in ar.msg_ids] == rc.ids
    rc.abort(ar.msg_ids[1], block=True)
    busy.get(timeout=20)
    with pytest.raises(hpcpar.CompositeError) as info:
        ar.get(timeout=20)
    assert [e[0] for e in info.value.elist] == ["TaskAborted"]
    assert info.value.elist[0][3]["engine_id"] == rc.ids[1]
    pids = {m: rc.get_result(m).get(timeout=20) for m in (ar.msg_ids[0], ar.msg_ids[2], ar.msg_ids[3])}
    assert len(set(pids.values())) == 3
    other = hpcpar.Client(profile="shared", timeout=30)  # a client that did not send it asks the hub
    try:
        assert other.get_result(ar.msg_ids[2]).get(timeout=20) == pids[ar.msg_ids[2]]
    finally:
        other.close()
    again = rc.resubmit(ar.msg_ids[3])
    assert again.get(timeout=20) == [pids[ar.msg_ids[3]]]  # ran again on the same engine (a list, as ipyparallel)
    assert again.msg_ids[0] not in ar.msg_ids


def test_a_target_named_twice_runs_twice(rc):
    # As in ipyparallel: each mention is one run, results in the order named.
    rc[:].execute("calls = []", block=True)
    count = hpcpar.interactive(lambda x: (calls.append(x), len(calls))[1])  # noqa: F821
    assert rc[[0, 1, 0]].apply_sync(count, 7) == [1, 1, 2]
    assert rc[0]["calls"] == [7, 7]
