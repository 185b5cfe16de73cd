"""ipyparallel's documented examples, written the way its users write them
(``import hpcpar as ipp``), against the shared cluster of four engines.

Each test is one documented behaviour of the tutorial (direct and task
interfaces), the AsyncResult page, the Reference/interactive docs and the
example programs; the code is ours, the promised answers are ipyparallel's.
"""

from __future__ import annotations

import os
import random
import sys
import time

import cloudpickle
import pytest

import hpcpar as ipp

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import this module


# -- direct interface -------------------------------------------------------


def test_block_attribute_switches_apply_between_values_and_async_results(rc):
    dview = rc[:]
    dview.block = True
    assert dview.apply(lambda x: x**10, 2) == [1024] * 4
    dview.block = False
    ar = dview.apply(lambda x: x + 1, 1)
    assert isinstance(ar, ipp.AsyncResult)
    assert ar.get(timeout=30) == [2] * 4
    # apply passes every keyword to the function; apply_sync blocks whatever the attribute
    assert dview.apply_sync(lambda block: block, block="kw") == ["kw"] * 4


def test_single_engine_view_gives_a_scalar_and_slices_pick_engines(rc):
    assert rc[0].apply_sync(lambda: 3) == 3
    assert rc[::2].targets == rc.ids[::2]
    assert rc[1::2].apply_sync(lambda: 1) == [1, 1]
    assert rc[-1].targets == rc.ids[-1]


def test_dictionary_interface_pushes_and_pulls(rc):
    dview = rc[:]
    dview["a"] = 5
    dview["b"] = 10
    assert dview["a"] == [5] * 4
    assert rc[0]["b"] == 10
    dview.execute("c = a + b", block=True)
    assert dview["c"] == [15] * 4


def test_push_pull_with_names_and_tuples(rc):
    dview = rc[:]
    dview.push(dict(a=1.5, b="x"), block=True)
    assert dview.pull("a", block=True) == [1.5] * 4
    assert dview.pull(("a", "b"), block=True) == [[1.5, "x"]] * 4
    assert rc[0].pull(("a", "b"), block=True) == [1.5, "x"]
    ar = dview.pull("b", block=False)
    assert ar.get(timeout=30) == ["x"] * 4


def test_push_and_pull_take_targets(rc):
    dview = rc[:]
    dview.push({"who": "all"}, block=True)
    dview.push({"who": "zero"}, targets=0, block=True)
    assert dview.pull("who", targets=0, block=True) == "zero"
    assert dview.pull("who", targets=[1, 2], block=True) == ["all", "all"]


def test_update_and_get_are_push_and_pull(rc):
    dview = rc[:]
    dview.update({"u": 42})
    assert dview.get("u") == [42] * 4


def test_scatter_then_gather_round_trips_a_sequence(rc):
    dview = rc[:]
    dview.scatter("a", list(range(16)), block=True)
    assert dview["a"] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    assert dview.gather("a", block=True) == list(range(16))
    dview.execute("b = [x * 2 for x in a]", block=True)
    assert dview.gather("b", block=True) == [x * 2 for x in range(16)]


def test_scatter_uneven_and_flatten(rc):
    dview = rc[:]
    dview.scatter("part", list(range(10)), block=True)
    parts = dview["part"]
    assert sum(parts, []) == list(range(10)) and all(len(p) in (2, 3) for p in parts)
    dview.scatter("id", rc.ids, flatten=True, block=True)
    assert dview["id"] == rc.ids


def test_scatter_and_gather_numpy_arrays(rc):
    np = pytest.importorskip("numpy")
    dview = rc[:]
    a = np.arange(20.0)
    dview.scatter("x", a, block=True)
    parts = dview["x"]
    assert all(isinstance(p, np.ndarray) for p in parts)
    back = dview.gather("x", block=True)
    assert isinstance(back, np.ndarray) and (back == a).all()


def test_execute_returns_async_result_and_reports_errors_per_engine(rc):
    dview = rc[:]
    ar = dview.execute("q = 1 / 0", block=False)
    with pytest.raises(ipp.CompositeError) as info:
        ar.get(timeout=30)
    assert len(info.value.elist) == 4
    assert all(e[0] == "ZeroDivisionError" for e in info.value.elist)
    with pytest.raises(ipp.RemoteError) as one:
        rc[0].execute("1 / 0", block=True)
    assert one.value.ename == "ZeroDivisionError"


def test_composite_error_raise_exception_gives_a_remote_error(rc):
    try:
        rc[:].execute("raise ValueError('bad')", block=True)
    except ipp.CompositeError as e:
        with pytest.raises(ipp.RemoteError) as info:
            e.raise_exception()
        assert info.value.ename == "ValueError" and "bad" in str(info.value.evalue)
    else:
        pytest.fail("no CompositeError")


def test_run_executes_a_script_file(rc, tmp_path):
    script = tmp_path / "setup_engines.py"
    script.write_text("ran_it = 'yes'\n")
    rc[:].run(str(script), block=True)
    assert rc[:]["ran_it"] == ["yes"] * 4


def test_sync_imports_imports_on_client_and_engines(rc):
    dview = rc[:]
    with dview.sync_imports(quiet=True):
        import json  # noqa: F401
    assert dview.apply_sync(ipp.interactive(lambda: json.dumps([1]))) == ["[1]"] * 4  # noqa: F821


def test_map_sync_on_a_direct_view_like_builtin_map(rc):
    assert rc[:].map_sync(lambda x: x**10, range(32)) == [x**10 for x in range(32)]
    assert rc[:].map(lambda a, b: a + b, range(5), range(5), block=True) == [0, 2, 4, 6, 8]


def test_remote_decorator_runs_on_every_engine(rc):
    dview = rc[:]

    @dview.remote(block=True)
    def getpid():
        import os

        return os.getpid()

    pids = getpid()
    assert len(set(pids)) == 4 and os.getpid() not in pids


def test_parallel_decorator_scatters_sequences(rc):
    np = pytest.importorskip("numpy")
    dview = rc[:]

    @dview.parallel(block=True)
    def pmul(a, b):
        return a * b

    A = np.arange(16).reshape(4, 4)
    B = np.arange(16).reshape(4, 4) + 1
    assert (np.asarray(pmul(A, B)) == A * B).all()
    assert list(pmul.map([1, 2, 3], [4, 5, 6])) == [4, 10, 18]


def test_interactive_functions_see_engine_globals(rc):
    rc[:].push({"a": 3}, block=True)

    @ipp.interactive
    def times_a(x):
        return a * x  # noqa: F821

    assert rc[:].apply_sync(times_a, 2) == [6] * 4


def test_reference_passes_engine_names_as_arguments(rc):
    dview = rc[:]
    dview.scatter("id", rc.ids, flatten=True, block=True)
    assert dview.apply_sync(lambda x: x * 10, ipp.Reference("id")) == [i * 10 for i in rc.ids]
    lview = rc.load_balanced_view()
    assert lview.apply_sync(lambda x: isinstance(x, int), ipp.Reference("id")) is True


def test_push_functions_then_call_them_on_engines(rc):
    def double(x):
        return 2 * x

    rc[:].push({"double": double}, block=True)
    rc[:].execute("r = double(21)", block=True)
    assert rc[:]["r"] == [42] * 4


def test_get_dict_keys_results_by_engine_and_pid_map_trick(rc):
    ar = rc[:].apply_async(os.getpid)
    pids = ar.get_dict(timeout=30)
    assert sorted(pids) == rc.ids
    rc[:]["pid_map"] = pids
    assert rc[0]["pid_map"] == pids


def test_clear_empties_engine_namespaces(rc):
    rc[:]["gone"] = 1
    rc[:].clear(block=True)
    with pytest.raises(ipp.CompositeError):
        rc[:].pull("gone", block=True)


def test_pull_of_a_missing_name_is_a_name_error(rc):
    with pytest.raises(ipp.RemoteError) as info:
        rc[0].pull("never_defined", block=True)
    assert info.value.ename == "NameError"


def test_apply_with_track_gives_a_tracker(rc):
    np = pytest.importorskip("numpy")
    ar = rc[:].apply_async(lambda a: a.sum(), np.ones(1000))
    assert ar.get(timeout=30) == [1000.0] * 4
    ar = rc[0].push({"big": np.ones(10)}, track=True, block=False)
    ar.get(timeout=30)
    assert ar.sent


# -- task interface ---------------------------------------------------------


def test_load_balanced_apply_and_map(rc):
    lview = rc.load_balanced_view()
    lview.block = True
    assert lview.apply(lambda x: x**2, 10) == 100
    assert lview.map(lambda x: x**2, range(10)) == [x**2 for x in range(10)]
    amr = lview.map_async(lambda x: x + 1, range(20), chunksize=4)
    assert list(amr) == list(range(1, 21))


def test_unordered_map_yields_every_result(rc):
    lview = rc.load_balanced_view()

    def slow_first(i):
        import time

        time.sleep(0.3 if i == 0 else 0)
        return i

    amr = lview.map_async(slow_first, range(8), ordered=False)
    seen = list(amr)
    assert sorted(seen) == list(range(8))
    assert seen[0] != 0  # the slow one does not hold the others back


def test_map_chunks_are_reported_as_their_messages(rc):
    amr = rc.load_balanced_view().map_async(lambda x: x, range(10), chunksize=5)
    assert len(amr.msg_ids) == 2 and len(amr) == 10
    assert amr.get(timeout=30) == list(range(10))


def test_monte_carlo_pi_example(rc):
    def mcpi(nsamples):
        import random

        hits = 0
        for _ in range(nsamples):
            x, y = random.random(), random.random()
            if x * x + y * y <= 1:
                hits += 1
        return 4.0 * hits / nsamples

    lview = rc.load_balanced_view()
    estimates = lview.map_sync(mcpi, [20000] * 8)
    pi = sum(estimates) / len(estimates)
    assert 3.0 < pi < 3.3


def test_after_runs_a_task_when_another_finished(rc):
    lview = rc.load_balanced_view()
    first = lview.apply_async(time.sleep, 0.5)
    with lview.temp_flags(after=[first]):
        second = lview.apply_async(time.time)
    t = second.get(timeout=30)
    assert first.ready()
    assert t >= first.metadata["completed"].timestamp() - 0.5


def test_follow_runs_where_the_other_task_ran(rc):
    lview = rc.load_balanced_view()
    first = lview.apply_async(os.getpid)
    pid = first.get(timeout=30)
    lview.set_flags(follow=first)
    try:
        pids = [lview.apply_async(os.getpid) for _ in range(4)]
    finally:
        lview.set_flags(follow=None)
    assert {p.get(timeout=30) for p in pids} == {pid}


def test_dependency_object_with_all_false(rc):
    lview = rc.load_balanced_view()
    ok = lview.apply_async(lambda: 1)
    bad = lview.apply_async(lambda: 1 / 0)
    ok.wait(30)
    bad.wait(30)
    dep = ipp.Dependency([ok.msg_ids[0], bad.msg_ids[0]], all=False)
    with lview.temp_flags(after=dep):
        ar = lview.apply_async(lambda: "ran")
    assert ar.get(timeout=30) == "ran"
    # all=True with success only cannot be met after a failure
    dep = ipp.Dependency([ok.msg_ids[0], bad.msg_ids[0]], all=True)
    with pytest.raises(ipp.RemoteError) as info:
        with lview.temp_flags(after=dep):
            never = lview.apply_async(lambda: "never")
        never.get(timeout=30)
    assert info.value.ename in ("ImpossibleDependency", "UnmetDependency")


def test_failure_true_dependency_runs_after_a_failed_task(rc):
    lview = rc.load_balanced_view()
    bad = lview.apply_async(lambda: 1 / 0)
    bad.wait(30)
    dep = ipp.Dependency(bad.msg_ids, failure=True, success=False)
    with lview.temp_flags(after=dep):
        ar = lview.apply_async(lambda: "after-failure")
    assert ar.get(timeout=30) == "after-failure"


def test_depend_decorator_picks_engines_where_the_test_passes(rc):
    target_pid = rc[1].apply_sync(os.getpid)

    def is_pid(pid):
        import os

        return os.getpid() == pid

    @ipp.depend(is_pid, target_pid)
    def where():
        import os

        return os.getpid()

    lview = rc.load_balanced_view()
    assert {lview.apply_sync(where) for _ in range(4)} == {target_pid}


def test_require_module_names_and_unmet_requirements(rc):
    @ipp.require("json")
    def dumps():
        return json.dumps({"k": 1})  # noqa: F821

    lview = rc.load_balanced_view()
    assert lview.apply_sync(dumps) == '{"k": 1}'

    @ipp.require("module_that_does_not_exist_anywhere")
    def nothing():
        return 1

    with pytest.raises(ipp.RemoteError):
        lview.apply_async(nothing).get(timeout=30)


def test_retries_resubmit_a_failing_task(rc):
    rc[:].execute("import itertools; attempts = itertools.count()", block=True)

    @ipp.interactive
    def flaky():
        if next(attempts) < 1:  # noqa: F821
            raise RuntimeError("first try fails")
        return "ok"

    lview = rc.load_balanced_view(targets=[0])
    with lview.temp_flags(retries=1):
        ar = lview.apply_async(flaky)
    assert ar.get(timeout=30) == "ok"


def test_timeout_flag_fails_a_task_that_waits_too_long(rc):
    lview = rc.load_balanced_view(targets=[0])
    blocker = lview.apply_async(time.sleep, 1)
    with lview.temp_flags(timeout=0.3, after=[blocker]):
        late = lview.apply_async(lambda: "late")
    with pytest.raises(ipp.RemoteError) as info:
        late.get(timeout=30)
    assert info.value.ename in ("TaskTimeout", "DependencyTimeout")
    blocker.get(timeout=30)


def test_load_balanced_view_on_a_subset_of_engines(rc):
    lview = rc.load_balanced_view(targets=[2, 3])
    pids = set(lview.map_sync(lambda _: __import__("os").getpid(), range(12)))
    assert pids <= set(rc[[2, 3]].apply_sync(os.getpid))


def test_executor_submit_and_map(rc):
    ex = rc.load_balanced_view().executor
    f = ex.submit(pow, 2, 5)
    assert f.result(timeout=30) == 32
    assert list(ex.map(abs, [-1, -2, 3])) == [1, 2, 3]


def test_imap_streams_results(rc):
    it = rc.load_balanced_view().imap(lambda x: x * 3, range(6))
    assert list(it) == [0, 3, 6, 9, 12, 15]


# -- AsyncResult ------------------------------------------------------------


def test_async_result_metadata_and_timings(rc):
    def talk():
        import sys

        print("hello out")
        print("hello err", file=sys.stderr)
        return 5

    ar = rc[:].apply_async(talk)
    assert ar.get(timeout=30) == [5] * 4
    assert ar.ready() and ar.successful()
    assert sorted(ar.engine_id) == rc.ids
    assert ar.stdout == ["hello out\n"] * 4
    assert ar.stderr == ["hello err\n"] * 4
    assert ar["stdout"] == ar.stdout
    md = ar.metadata[0]
    for key in (
        "submitted",
        "started",
        "completed",
        "received",
        "engine_id",
        "engine_uuid",
        "stdout",
        "stderr",
    ):
        assert key in md, key
    assert md["submitted"] <= md["started"] <= md["completed"]
    assert ar.elapsed > 0 and ar.wall_time > 0 and ar.serial_time > 0
    assert ar.progress == len(ar) == 4
    single = rc[0].apply_async(talk)
    single.get(timeout=30)
    assert single.stdout == "hello out\n" and single.engine_id == rc.ids[0]
    assert single.metadata["engine_id"] == rc.ids[0]


def test_async_result_get_timeout_raises_timeout_error(rc):
    ar = rc[0].apply_async(time.sleep, 1)
    with pytest.raises(ipp.TimeoutError):
        ar.get(timeout=0.05)
    assert not ar.ready()
    ar.get(timeout=30)
    assert ar.ready()


def test_async_result_is_a_future_and_can_be_waited_on_by_the_client(rc):
    import concurrent.futures

    ar = rc[:].apply_async(lambda: 1)
    assert isinstance(ar, concurrent.futures.Future)
    assert rc.wait([ar], timeout=30)
    assert ar.done() and ar.result() == [1] * 4
    done = []
    ar2 = rc[0].apply_async(lambda: 2)
    ar2.add_done_callback(lambda f: done.append(f.result()))
    ar2.wait(30)
    deadline = time.monotonic() + 10
    while not done and time.monotonic() < deadline:
        time.sleep(0.02)
    assert done == [2]


def test_wait_interactive_prints_progress_and_finishes(rc, capsys):
    ar = rc.load_balanced_view().map_async(time.sleep, [0.1] * 8)
    ar.wait_interactive(interval=0.05)
    assert ar.ready()
    shown = capsys.readouterr()
    assert "8/8" in shown.out + shown.err  # a progress line (tqdm writes to stderr)
    rc.wait_interactive(timeout=30)


def test_display_outputs_groups_by_engine(rc, capsys):
    def hi():
        print("hi there")

    ar = rc[:].apply_async(hi)
    ar.get(timeout=30)
    capsys.readouterr()
    ar.display_outputs()
    out = capsys.readouterr().out
    for i in rc.ids:
        assert f"[stdout:{i}]" in out
    assert out.count("hi there") == 4
    ar.display_outputs(groupby="engine")
    assert capsys.readouterr().out.count("hi there") == 4


def test_client_history_results_and_get_result(rc):
    ar = rc[0].apply_async(lambda: "kept")
    ar.get(timeout=30)
    assert ar.msg_ids[0] in rc.history
    assert rc.results[ar.msg_ids[0]] == "kept"
    again = rc.get_result(ar.msg_ids[0])
    assert again.get(timeout=30) == "kept"
    status = rc.result_status(ar.msg_ids)
    assert ar.msg_ids[0] in status["completed"]
    q = rc.queue_status()
    assert set(rc.ids) <= set(q) and "unassigned" in q


def test_abort_pending_tasks(rc):
    lview = rc.load_balanced_view(targets=[0])
    blocker = lview.apply_async(time.sleep, 1)
    with lview.temp_flags(after=[blocker]):
        queued = lview.apply_async(lambda: "x")
    queued.abort()
    with pytest.raises(ipp.RemoteError) as info:
        queued.get(timeout=30)
    assert info.value.ename == "TaskAborted" or isinstance(info.value, ipp.TaskAborted)
    blocker.get(timeout=30)


def test_random_data_round_trips_through_push_and_pull(rc):
    data = {
        "ints": [random.randint(0, 9) for _ in range(50)],
        "text": "ü" * 5,
        "nested": {"t": (1, 2)},
    }
    rc[:].push({"data": data}, block=True)
    assert rc[:]["data"] == [data] * 4


# -- more of the documented surface ----------------------------------------


def test_views_default_to_non_blocking(rc):
    dview = rc[:]
    assert dview.block is False
    assert isinstance(dview.apply(lambda: 1), ipp.AsyncResult)
    amr = dview.map(lambda x: x, range(4))
    assert isinstance(amr, ipp.AsyncMapResult) and amr.get(timeout=30) == [0, 1, 2, 3]
    lamr = rc.load_balanced_view().map(lambda x: x, range(4))
    assert isinstance(lamr, ipp.AsyncMapResult) and lamr.get(timeout=30) == [0, 1, 2, 3]
    assert dview.push({"z": 1}).get(timeout=30) == [None] * 4


def test_metadata_is_attribute_accessible(rc):
    ar = rc[0].apply_async(lambda: 1)
    ar.get(timeout=30)
    md = ar.metadata
    assert md.engine_id == md["engine_id"] == rc.ids[0]
    assert md.status == "ok"
    assert rc.metadata[ar.msg_ids[0]]["engine_id"] == rc.ids[0]


def test_indexing_an_async_result(rc):
    ar = rc[:].apply_async(lambda: __import__("os").getpid())
    ar.get(timeout=30)
    assert ar[0] == ar.get()[0]
    assert ar[1:3] == ar.get()[1:3]
    assert ar["engine_id"] == ar.engine_id
    assert list(ar) == ar.get()


def test_map_with_one_failing_element_raises_composite_error(rc):
    lview = rc.load_balanced_view()
    with pytest.raises(ipp.CompositeError) as info:
        lview.map_sync(lambda x: 1 / x, [1, 0, 2])
    assert [e[0] for e in info.value.elist] == ["ZeroDivisionError"]
    with pytest.raises(ipp.CompositeError):
        rc[:].map_sync(lambda x: 1 / x, [1, 0, 2, 3])
    with pytest.raises(ipp.RemoteError) as single:
        lview.apply_sync(lambda: 1 / 0)
    assert single.value.ename == "ZeroDivisionError" and not isinstance(
        single.value, ipp.CompositeError
    )


def test_remote_error_carries_engine_info_and_traceback(rc):
    with pytest.raises(ipp.RemoteError) as info:
        rc[1].apply_sync(lambda: {}["missing"])
    err = info.value
    assert err.ename == "KeyError"
    assert err.engine_info["engine_id"] == rc.ids[1]
    assert "KeyError" in err.traceback
    assert "KeyError" in str(err) or "missing" in str(err)


def test_composite_error_print_traceback(rc, capsys):
    try:
        rc[:].execute("raise RuntimeError('each')", block=True)
    except ipp.CompositeError as e:
        e.print_traceback()
        out = capsys.readouterr().out
        assert "RuntimeError" in out
        e.print_traceback(excid=1)
        assert "RuntimeError" in capsys.readouterr().out
    else:
        pytest.fail("no CompositeError")


def test_scatter_round_robin_dist(rc):
    dview = rc[:]
    dview.scatter("rr", list(range(8)), dist="r", block=True)
    assert dview["rr"] == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert dview.gather("rr", dist="r", block=True) == list(range(8))


def test_top_level_remote_and_parallel_decorators(rc):
    @ipp.remote(rc[:], block=True)
    def hostname_len():
        import socket

        return len(socket.gethostname())

    assert len(hostname_len()) == 4

    @ipp.parallel(rc[:], block=True)
    def add_one(chunk):
        return [x + 1 for x in chunk]

    assert add_one(list(range(8))) == list(range(1, 9))


def test_direct_view_all_and_broadcast_view(rc):
    dv = rc.direct_view("all")
    assert dv.apply_sync(lambda: 1) == [1] * 4
    bv = rc.broadcast_view()
    assert bv.apply_sync(lambda: 2) == [2] * 4
    bv.execute("bvx = 9", block=True)
    assert rc[:]["bvx"] == [9] * 4


def test_reference_inside_containers_and_kwargs(rc):
    rc[:].push({"g": [10, 20]}, block=True)
    f = lambda items, k=None: (items, k)  # noqa: E731
    got = rc[0].apply_sync(f, [ipp.Reference("g"), 1], k={"r": ipp.Reference("g[1]")})
    assert got == ([[10, 20], 1], {"r": 20})


def test_use_dill_and_use_cloudpickle_ship_closures(rc):
    pytest.importorskip("dill")
    dview = rc[:]
    factor = 3
    try:
        dview.use_dill()
        assert dview.apply_sync(lambda x: x * factor, 2) == [6] * 4
    finally:
        dview.use_cloudpickle()
    assert dview.apply_sync(lambda x: x * factor, 3) == [9] * 4


def test_hub_queries_db_query_and_purge(rc):
    ar = rc[0].apply_async(lambda: "q")
    ar.get(timeout=30)
    recs = rc.db_query({"msg_id": {"$in": ar.msg_ids}}, keys=["msg_id", "completed", "engine_uuid"])
    assert [r["msg_id"] for r in recs] == ar.msg_ids
    assert set(recs[0]) >= {"msg_id", "completed", "engine_uuid"}
    rc.purge_local_results(ar)
    assert ar.msg_ids[0] not in rc.results
    assert rc.get_result(ar.msg_ids[0]).get(timeout=30) == "q"  # the hub still has it
    rc.purge_results(ar.msg_ids)
    with pytest.raises(ipp.RemoteError):
        rc.get_result(ar.msg_ids[0]).get(timeout=30)


def test_client_outstanding_spin_and_len(rc):
    ar = rc[:].apply_async(time.sleep, 0.2)
    assert set(ar.msg_ids) <= rc.outstanding
    rc.wait(timeout=30)
    rc.spin()
    assert not (set(ar.msg_ids) & rc.outstanding)
    assert len(rc) == 4 and rc.ids == [0, 1, 2, 3]


def test_async_result_sent_and_wait_for_send(rc):
    ar = rc[:].apply_async(lambda: 1)
    ar.wait_for_send(timeout=30)
    assert ar.sent
    ar.get(timeout=30)


def test_async_result_exception_and_result_as_a_future(rc):
    ar = rc[0].apply_async(lambda: 1 / 0)
    ar.wait(30)
    exc = ar.exception(timeout=30)
    assert isinstance(exc, ipp.RemoteError) and exc.ename == "ZeroDivisionError"
    with pytest.raises(ipp.RemoteError):
        ar.result(timeout=30)
    assert ar.ready() and not ar.successful()


def test_map_results_iterate_in_order_as_they_arrive(rc):
    def wait_then(x):
        import time

        time.sleep(0.05 * (4 - x))
        return x

    amr = rc.load_balanced_view().map_async(wait_then, range(4))
    assert [r for r in amr] == [0, 1, 2, 3]
    assert amr.progress == 4


def test_apply_with_kwargs_and_numpy_result(rc):
    np = pytest.importorskip("numpy")

    def make(n, fill=0.0):
        import numpy as np

        return np.full(n, fill)

    out = rc[0].apply_sync(make, 3, fill=2.5)
    assert isinstance(out, np.ndarray) and out.tolist() == [2.5] * 3


def test_abort_everything_queued_on_a_view(rc):
    dv = rc[0]
    blocker = dv.apply_async(time.sleep, 0.8)
    queued = [dv.apply_async(lambda: "x") for _ in range(3)]
    dv.abort()
    for q in queued:
        with pytest.raises(ipp.RemoteError):
            q.get(timeout=30)
    blocker.get(timeout=30)


def test_wait_returns_whether_everything_finished(rc):
    ar = rc[0].apply_async(time.sleep, 0.5)
    assert ar.wait(0) is False
    assert rc.wait([ar], timeout=0.01) is False
    assert ar.wait(30) is True
    assert rc.wait([ar], timeout=30) is True


def test_flags_as_view_attributes(rc):
    lview = rc.load_balanced_view()
    lview.retries = 1
    lview.timeout = 20
    assert lview.retries == 1 and lview.timeout == 20
    assert lview.apply_sync(lambda: "flags") == "flags"
    lview.set_flags(block=True)
    assert lview.apply(lambda: "blocked") == "blocked"
    with lview.temp_flags(block=False):
        assert isinstance(lview.apply(lambda: 1), ipp.AsyncResult)
    assert lview.block is True


def test_after_accepts_msg_ids_and_async_results(rc):
    lview = rc.load_balanced_view()
    first = lview.apply_async(lambda: 1)
    with lview.temp_flags(after=first.msg_ids[0]):
        a = lview.apply_async(lambda: "by id")
    with lview.temp_flags(after=first):
        b = lview.apply_async(lambda: "by result")
    assert (a.get(timeout=30), b.get(timeout=30)) == ("by id", "by result")


def test_dependent_wraps_a_function_with_a_condition(rc):
    def always(*_):
        return True

    f = ipp.dependent(lambda x: x + 1, always)
    assert rc.load_balanced_view().apply_sync(f, 1) == 2


def test_load_balanced_get_dict_and_engine_id(rc):
    ar = rc.load_balanced_view().apply_async(lambda: "lb")
    assert list(ar.get_dict(timeout=30).values()) == ["lb"]
    assert ar.engine_id in rc.ids


def test_resubmit_runs_a_finished_task_again(rc):
    ar = rc.load_balanced_view().apply_async(lambda: "again")
    ar.get(timeout=30)
    again = rc.resubmit(ar.msg_ids)
    assert again.get(timeout=30) == ["again"]  # a list of msg_ids gives a list
    assert set(again.msg_ids).isdisjoint(ar.msg_ids)


def test_hub_history_lists_submitted_messages(rc):
    ar = rc[0].apply_async(lambda: 0)
    ar.get(timeout=30)
    assert ar.msg_ids[0] in rc.hub_history()


def test_sync_imports_from_import(rc):
    dview = rc[:]
    with dview.sync_imports(quiet=True):
        from os import path  # noqa: F401
    assert dview.apply_sync(ipp.interactive(lambda: path.join("a", "b"))) == ["a/b"] * 4  # noqa: F821


def test_scatter_and_gather_on_a_subset_of_engines(rc):
    dview = rc[:]
    dview.scatter("sub", list(range(6)), targets=[1, 2], block=True)
    assert dview.pull("sub", targets=[1, 2], block=True) == [[0, 1, 2], [3, 4, 5]]
    assert dview.gather("sub", targets=[1, 2], block=True) == list(range(6))
    rc[3].scatter("one", [1, 2, 3], block=True)
    assert rc[3]["one"] == [1, 2, 3]


def test_execute_output_and_display_outputs(rc, capsys):
    ar = rc[:].execute("print('from', 'engine')", block=True)
    assert ar.stdout == ["from engine\n"] * 4
    capsys.readouterr()
    ar.display_outputs()
    assert capsys.readouterr().out.count("from engine") == 4


def test_execute_targets_and_clear_targets(rc):
    dview = rc[:]
    dview.execute("mark = 'set'", targets=[0, 1], block=True)
    assert dview.pull("mark", targets=[0, 1], block=True) == ["set", "set"]
    with pytest.raises(ipp.RemoteError):
        rc[2].pull("mark", block=True)
    rc.clear(targets=[0], block=True)
    with pytest.raises(ipp.RemoteError):
        rc[0].pull("mark", block=True)
    assert rc[1]["mark"] == "set"


def test_client_abort_by_async_result(rc):
    dv = rc[2]
    blocker = dv.apply_async(time.sleep, 0.8)
    queued = dv.apply_async(lambda: "x")
    rc.abort(queued)
    with pytest.raises(ipp.RemoteError) as info:
        queued.get(timeout=30)
    assert isinstance(info.value, ipp.TaskAborted) or info.value.ename == "TaskAborted"
    blocker.get(timeout=30)


def test_queue_status_verbose_lists_message_ids(rc):
    dv = rc[3]
    blocker = dv.apply_async(time.sleep, 0.5)
    queued = dv.apply_async(lambda: 1)
    status = rc.queue_status(targets=3, verbose=True)
    assert isinstance(status["queue"], list)
    assert queued.msg_ids[0] in status["queue"] or queued.ready()
    blocker.get(timeout=30)
    queued.get(timeout=30)


def test_map_over_several_sequences_and_empty_input(rc):
    lview = rc.load_balanced_view()
    assert lview.map_sync(pow, [2, 3], [3, 2]) == [8, 9]
    assert lview.map_sync(abs, []) == []
    assert rc[:].map_sync(abs, []) == []


def test_cluster_context_manager_as_in_the_tutorial():
    with ipp.Cluster(n=2, profile="docs-examples") as rc:
        assert len(rc.ids) == 2
        fixed, everyone = rc[:], rc.direct_view("all")
        assert fixed.apply_sync(lambda: "up") == ["up", "up"]
        rc.cluster.start_engines_sync(n=1)
        rc.wait_for_engines(3, timeout=60, interactive=False)
        assert rc[:].apply_sync(lambda: "up") == ["up"] * 3
        assert everyone.apply_sync(lambda: 1) == [1] * 3  # 'all' follows the engines
        assert fixed.apply_sync(lambda: 1) == [1] * 2  # rc[:] keeps the ids it was made with


def test_reference_to_an_attribute_and_as_the_function(rc):
    rc[:].execute(
        "import types; obj = types.SimpleNamespace(val=7)\ndef inc(x):\n    return x + 1",
        block=True,
    )
    assert rc[0].apply_sync(lambda v: v, ipp.Reference("obj.val")) == 7
    assert rc[:].apply_sync(ipp.Reference("inc"), 1) == [2] * 4


def test_pre_pickled_arguments(rc):
    payload = ipp.PrePickled(list(range(100)))
    assert rc[:].apply_sync(len, payload) == [100] * 4


def test_interactive_function_can_set_engine_globals(rc):
    @ipp.interactive
    def setter(v):
        global gv
        gv = v

    rc[:].apply_sync(setter, "g")
    assert rc[:]["gv"] == ["g"] * 4


def test_get_dict_refuses_two_results_from_one_engine(rc):
    ar = rc[[0, 0]].apply_async(lambda: 1)
    assert ar.get(timeout=30) == [1, 1]
    with pytest.raises(ValueError):
        ar.get_dict()


def test_client_executor_and_view_history(rc):
    ex = rc.executor()
    assert ex.submit(lambda: "exec").result(timeout=30) == "exec"
    view = rc[1]
    ar = view.apply_async(lambda: 1)
    view.wait(timeout=30)
    assert ar.msg_ids[0] in view.history
    assert not view.outstanding
    assert view.results[ar.msg_ids[0]] == 1


def test_get_result_by_history_index(rc):
    ar = rc[0].apply_async(lambda: "last one")
    ar.get(timeout=30)
    assert rc.history[-1] == ar.msg_ids[0]
    assert rc.get_result(-1).get(timeout=30) == "last one"
    assert rc.get_result(ar).get(timeout=30) == "last one"


def test_setting_targets_on_a_view(rc):
    dview = rc[:]
    dview.targets = [0, 1]
    assert dview.apply_sync(lambda: 1) == [1, 1]
    dview.targets = 2
    assert dview.apply_sync(lambda: 1) == 1


def test_purge_everything_forgets_history(rc):
    rc[0].apply_sync(lambda: 1)
    rc.purge_everything()
    assert rc.history == [] and rc.results == {}
    assert rc.hub_history() == []


def test_joblib_backend_runs_parallel_loops_on_the_engines(rc):
    joblib = pytest.importorskip("joblib")
    rc.load_balanced_view().register_joblib_backend()
    with joblib.parallel_backend("ipyparallel"):
        out = joblib.Parallel(n_jobs=4)(joblib.delayed(pow)(i, 2) for i in range(8))
    assert out == [i * i for i in range(8)]


def test_elapsed_grows_while_pending(rc):
    ar = rc[0].apply_async(time.sleep, 0.4)
    first = ar.elapsed
    time.sleep(0.1)
    assert ar.elapsed > first
    ar.get(timeout=30)
    assert ar.elapsed >= 0.4


def test_client_results_hold_finished_results_without_get(rc):
    ar = rc[:].apply_async(lambda: "done")
    rc.wait(ar, timeout=30)
    assert all(m in rc.results for m in ar.msg_ids)
    assert [rc.results[m] for m in ar.msg_ids] == ["done"] * 4
    assert {m: rc.results.get(m) for m in ar.msg_ids} == dict.fromkeys(ar.msg_ids, "done")
    assert set(ar.msg_ids) <= set(rc.results)


def test_depend_that_no_engine_meets_is_an_impossible_dependency(rc):
    def never():
        return False

    @ipp.depend(never)
    def task():
        return "ran"

    with pytest.raises(ipp.RemoteError) as info:
        rc.load_balanced_view().apply_async(task).get(timeout=60)
    assert info.value.ename == "ImpossibleDependency"
    assert isinstance(info.value, ipp.ImpossibleDependency)


def test_composite_error_names_engine_and_method(rc):
    with pytest.raises(ipp.CompositeError) as info:
        rc[:].execute("1 / 0", block=True)
    text = str(info.value)
    assert "one or more exceptions" in text
    for i in rc.ids:
        assert f"[{i}:execute]" in text
    assert "ZeroDivisionError" in text
    ename, evalue, tb, engine_info = info.value.elist[0]
    assert (
        ename == "ZeroDivisionError" and "division" in evalue and engine_info["engine_id"] in rc.ids
    )


def test_customresults_pattern_polls_outstanding(rc):
    lview = rc.load_balanced_view()
    amr = lview.map_async(lambda i: i * 2, range(12), chunksize=2)
    pending = set(amr.msg_ids)
    results = {}
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        rc.wait(pending, 1e-3)
        finished = pending.difference(rc.outstanding)
        pending = pending.difference(finished)
        for msg_id in finished:
            ar = rc.get_result(msg_id)
            results[msg_id] = ar.get(timeout=30)
            assert ar.engine_id in rc.ids
    assert not pending
    assert sorted(sum((results[m] for m in amr.msg_ids), [])) == [i * 2 for i in range(12)]


def test_pull_evaluates_expressions_in_the_engine_namespace(rc):
    rc[:].execute("import types; box = types.SimpleNamespace(val=3); seq = [1, 2, 3]", block=True)
    assert rc[0].pull("box.val", block=True) == 3
    assert rc[:]["len(seq)"] == [3] * 4
    assert rc[0].pull(["seq[0]", "box.val + 1"], block=True) == [1, 4]


def test_imap_with_unordered_results_and_bounded_outstanding(rc):
    it = rc.load_balanced_view().imap(lambda x: x + 1, range(10), ordered=False, max_outstanding=2)
    assert sorted(it) == list(range(1, 11))


def test_map_over_numpy_arrays(rc):
    np = pytest.importorskip("numpy")
    a = np.arange(8)
    assert list(rc[:].map_sync(lambda x: int(x) * 2, a)) == [x * 2 for x in range(8)]
    assert rc.load_balanced_view().map_sync(lambda x: int(x) + 1, a) == [x + 1 for x in range(8)]


def test_get_with_return_exceptions(rc):
    ar = rc[:].apply_async(lambda: 1 / 0)
    got = ar.get(timeout=30, return_exceptions=True)
    assert len(got) == 4 and all(isinstance(e, ipp.RemoteError) for e in got)
    amr = rc.load_balanced_view().map_async(lambda x: 1 / x, [1, 0], return_exceptions=True)
    first, second = amr.get(timeout=30)
    assert first == 1.0 and isinstance(second, ipp.RemoteError)


def test_scatter_refuses_what_is_not_a_sequence(rc):
    with pytest.raises(TypeError):
        rc[:].scatter("x", 5, block=True)


def test_push_assigns_to_targets_like_code(rc):
    rc[:].execute("import types; box = types.SimpleNamespace(val=0); cells = [0, 0]", block=True)
    rc[:]["box.val"] = 5
    rc[:].push({"cells[1]": "x"}, block=True)
    assert rc[:].pull(["box.val", "cells"], block=True) == [[5, [0, "x"]]] * 4


def test_wait_for_engines_times_out_and_can_return_a_future(rc):
    with pytest.raises(TimeoutError):
        rc.wait_for_engines(len(rc.ids) + 1, timeout=0.5, interactive=False)
    fut = rc.wait_for_engines(len(rc.ids), block=False)
    fut.result(timeout=30)
    assert fut.done() and fut.exception() is None


def test_unknown_engine_ids_are_index_errors(rc):
    with pytest.raises(IndexError):
        rc[99]
    with pytest.raises(IndexError, match="not registered"):
        rc.load_balanced_view(targets=[99])  # checked when the view is made, as in ipyparallel


def test_syntax_errors_in_executed_code_reach_the_user(rc):
    with pytest.raises(ipp.RemoteError) as info:
        rc[0].execute("def broken(:\n    pass", block=True)
    assert info.value.ename == "SyntaxError"


def test_stdout_of_raw_writes_and_of_map_chunks(rc):
    ar = rc[0].execute("import sys; sys.stdout.write('raw')", block=True)
    assert ar.stdout == "raw"

    def loud(x):
        print("item", x)
        return x

    amr = rc.load_balanced_view().map_async(loud, range(4), chunksize=2)
    amr.get(timeout=30)
    assert amr.stdout == ["item 0\nitem 1\n", "item 2\nitem 3\n"]


def test_dag_of_tasks_runs_each_after_its_parents(rc):
    """The dependency-graph example: submit in topological order, each task after its parents."""
    parents = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["d"]}
    lview = rc.load_balanced_view()
    results = {}
    for node, deps in parents.items():
        with lview.temp_flags(after=[results[p] for p in deps]):
            results[node] = lview.apply_async(time.sleep, 0.05)
    lview.wait(list(results.values()), timeout=60)
    for node, deps in parents.items():
        started = results[node].metadata["started"]
        for p in deps:
            assert results[p].metadata["completed"] <= started, (p, node)


def test_dependency_built_from_async_results(rc):
    lview = rc.load_balanced_view()
    a = lview.apply_async(lambda: 1)
    b = lview.apply_async(lambda: 2)
    dep = ipp.Dependency([a, b])
    assert set(dep) == set(a.msg_ids + b.msg_ids)
    with lview.temp_flags(after=dep):
        c = lview.apply_async(lambda: 3)
    assert c.get(timeout=30) == 3 and a.ready() and b.ready()


def test_timing_helpers_of_a_finished_result(rc):
    ar = rc[:].apply_async(time.sleep, 0.2)
    ar.get(timeout=30)
    assert (
        ar.serial_time >= 0.8 and ar.wall_time >= 0.2
    )  # the docs' speedup is serial_time / wall_time
    md = ar.metadata
    span = ar.timedelta([m["submitted"] for m in md], [m["completed"] for m in md])
    assert span >= 0.2
    assert ar.timedelta(md[0]["started"], md[0]["completed"]) >= 0.2


def test_unordered_map_get_still_gives_input_order(rc):
    def nap(t):
        import time

        time.sleep(t)
        return t

    amr = rc.load_balanced_view().map_async(nap, [0.4, 0.0, 0.0], ordered=False)
    assert amr.get(timeout=30) == [0.4, 0.0, 0.0]


def test_interactive_function_mapped_on_a_load_balanced_view(rc):
    rc[:].push({"offset": 100}, block=True)

    @ipp.interactive
    def shift(x):
        return x + offset  # noqa: F821

    assert rc.load_balanced_view().map_sync(shift, range(5)) == [100, 101, 102, 103, 104]
    assert rc[:].map_sync(shift, range(5)) == [100, 101, 102, 103, 104]


def test_futures_notebook_async_results_in_future_tools(rc):
    import asyncio
    import concurrent.futures

    def norm(n):
        return sum(i * i for i in range(n)) ** 0.5

    f = rc[-1].apply(norm, 10)
    assert f.result(timeout=30) == norm(10)
    fs = [rc.load_balanced_view().apply_async(norm, n) for n in range(1, 6)]
    done = {fut.result() for fut in concurrent.futures.as_completed(fs, timeout=30)}
    assert done == {norm(n) for n in range(1, 6)}
    finished, not_done = concurrent.futures.wait(fs, timeout=30)
    assert len(finished) == 5 and not not_done

    async def gather():
        ars = [rc[i].apply_async(norm, 3) for i in rc.ids]
        return await asyncio.gather(*(asyncio.wrap_future(a) for a in ars))

    assert asyncio.run(gather()) == [norm(3)] * 4
    amr = rc.load_balanced_view().map_async(norm, [2, 3])
    assert amr.result(timeout=30) == [norm(2), norm(3)]
    ex = rc.executor(targets=[0, 1])
    assert list(ex.map(norm, [4, 5])) == [norm(4), norm(5)]


def test_decorators_on_a_load_balanced_view(rc):
    lview = rc.load_balanced_view()

    @lview.parallel(block=True)
    def quartic(x):
        return 10.0 * x**4

    assert quartic.map(range(8)) == [10.0 * x**4 for x in range(8)]

    @lview.parallel(block=True)
    def total(chunk):
        return [sum(chunk)]

    assert total(list(range(6))) == list(range(6))  # one element per part: no chunksize given

    @lview.remote(block=True)
    def where():
        import os

        return os.getpid()

    assert where() in set(rc[:].apply_sync(os.getpid))


def test_targets_as_a_temporary_flag(rc):
    pids = dict(zip(rc.ids, rc[:].apply_sync(os.getpid)))
    dview = rc[:]
    with dview.temp_flags(targets=[0, 1], block=True):
        assert dview.apply(os.getpid) == [pids[0], pids[1]]
    assert dview.targets == rc.ids
    lview = rc.load_balanced_view()
    with lview.temp_flags(targets=[2]):
        got = {lview.apply_sync(os.getpid) for _ in range(4)}
    assert got == {pids[2]}
    assert lview.targets is None


def test_repr_of_views_and_results_name_their_state(rc):
    assert "DirectView" in repr(rc[:]) and "LoadBalancedView" in repr(rc.load_balanced_view())
    ar = rc[0].apply_async(time.sleep, 0.2)
    assert "pending" in repr(ar)
    ar.get(timeout=30)
    assert "finished" in repr(ar)


def test_unpicklable_things_fail_clearly_both_ways(rc):
    gen = (i for i in range(3))
    with pytest.raises(TypeError, match="pickle"):  # pickle's own error type, as with ipyparallel
        rc[0].apply_sync(lambda g: g, gen)
    with pytest.raises(ipp.RemoteError) as back:
        rc[0].apply_sync(lambda: (i for i in range(3)))
    assert "generator" in str(back.value) or "pickle" in str(back.value).lower()
    assert rc[0].apply_sync(lambda: "still serving") == "still serving"


def test_metadata_records_dependencies_and_inputs(rc):
    lview = rc.load_balanced_view()
    first = lview.apply_async(lambda: 1)
    with lview.temp_flags(after=[first], follow=[first]):
        second = lview.apply_async(lambda: 2)
    second.get(timeout=30)
    md = second.metadata
    assert md["engine_id"] == first.metadata["engine_id"]
    ex = rc[0].execute("val = 6 * 7\nval", silent=False, block=True)
    assert ex.metadata["execute_input"] == "val = 6 * 7\nval"
    assert ex.metadata["execute_result"]["data"]["text/plain"] == "42"
    for key in (
        "msg_id",
        "status",
        "outputs",
        "data",
        "error",
        "execute_result",
        "after",
        "follow",
    ):
        assert key in md, key


ITERMAP_SCRIPT = """
import time
import hpcpar as ipp

rc = ipp.Client(profile="shared", timeout=30)
dv = rc[:]
v = rc.load_balanced_view()
dv.scatter("id", rc.ids, flatten=True, block=True)
ar = dv.apply(time.sleep, ipp.Reference("id"))
print("apply", [r for r in ar])

def sleep_here(t):
    import time
    time.sleep(t)
    return id, t

amr = v.map(sleep_here, [0.01 * t for t in range(8)], chunksize=2)
print("map", sorted({r[0] for r in amr} - set(rc.ids)), [r[1] for r in amr])
amr = v.map(sleep_here, [0.01 * t for t in range(8, 0, -1)], ordered=False)
print("unordered", sorted(r[1] for r in amr))
dv.activate()  # outside IPython: a warning, and the script goes on
print("activated", type(rc.activate()).__name__)
"""


def test_itermapresult_example_as_a_script(rc, tmp_path):
    """Functions defined in a script's __main__ see the engine's namespace (here its `id`);
    activate() in a script warns instead of failing, as ipyparallel's."""
    import subprocess

    script = tmp_path / "itermap.py"
    script.write_text(ITERMAP_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "apply [None, None, None, None]"
    assert lines[1] == "map [] " + str([0.01 * t for t in range(8)])
    assert lines[2] == "unordered " + str(sorted(0.01 * t for t in range(8, 0, -1)))
    assert lines[3] == "activated DirectView"
    assert "only work inside IPython" in out.stderr


def test_data_publication_example(rc):
    def simulation(steps):
        import time

        from hpcpar.datapub import publish_data

        for i in range(steps):
            publish_data({"step": i, "energy": i * 0.5})
            time.sleep(0.02)
        return steps

    ar = rc[:].apply_async(simulation, 5)
    seen = []
    deadline = time.monotonic() + 60
    while not ar.ready() and time.monotonic() < deadline:
        seen.append(ar.data)
        time.sleep(0.01)
    assert ar.get(timeout=30) == [5] * 4
    assert ar.data == [{"step": 4, "energy": 2.0}] * 4
    single = rc[0].apply_async(simulation, 2)
    single.get(timeout=30)
    assert single.data == {"step": 1, "energy": 0.5}


def test_gather_gives_lists_and_strings_scatter_as_slices(rc):
    dview = rc[:]
    dview.scatter("t", (1, 2, 3, 4, 5, 6, 7, 8), block=True)
    assert dview["t"] == [(1, 2), (3, 4), (5, 6), (7, 8)]
    assert dview.gather("t", block=True) == [1, 2, 3, 4, 5, 6, 7, 8]
    dview.scatter("s", "abcdefgh", block=True)
    assert dview["s"] == ["ab", "cd", "ef", "gh"]
    assert dview.map_sync(str.upper, "abcd") == ["A", "B", "C", "D"]


def test_client_block_is_the_default_for_new_views(rc):
    rc.block = True
    try:
        assert rc[:].apply(lambda: 1) == [1] * 4
        assert rc.load_balanced_view().apply(lambda: 2) == 2
    finally:
        rc.block = False
    assert isinstance(rc[:].apply(lambda: 1), ipp.AsyncResult)


def test_wait_takes_a_message_id_and_a_spin_thread_keeps_results_coming(rc):
    ar = rc[0].apply_async(lambda: 5)
    assert rc.wait(ar.msg_ids[0], timeout=30)
    rc.spin_thread(interval=0.05)
    try:
        ar2 = rc[1].apply_async(lambda: 6)
        assert ar2.get(timeout=30) == 6
    finally:
        rc.stop_spin_thread()


def test_mpi_tutorial_psum_on_a_broadcast_view():
    """The "Using MPI" tutorial: MPI engines, a BroadcastView, an Allreduce over scattered data."""
    from test_mpi import require_mpi

    require_mpi()
    np = pytest.importorskip("numpy")

    def psum(a):
        import numpy as np
        from mpi4py import MPI

        total = np.array(0.0, "d")
        MPI.COMM_WORLD.Allreduce(
            [np.array(np.sum(a), "d"), MPI.DOUBLE], [total, MPI.DOUBLE], op=MPI.SUM
        )
        return float(total)

    with ipp.Cluster(engines="mpi", n=2, profile="docs-examples-mpi") as rc:
        view = rc.broadcast_view()
        ranks = view.apply_sync(lambda: __import__("mpi4py.MPI").MPI.COMM_WORLD.Get_rank())
        assert sorted(ranks) == [0, 1]
        view.scatter("a", np.arange(16, dtype="float"), block=True)
        assert view.apply_sync(psum, ipp.Reference("a")) == [120.0, 120.0]


def test_minus_one_timeouts_mean_wait_forever(rc):
    ar = rc[0].apply_async(time.sleep, 0.2)
    assert ar.wait(-1) is True
    assert ar.get(-1) is None
    ar = rc[:].apply_async(lambda: 3)
    assert rc.wait([ar], timeout=-1) is True
    assert ar.get(timeout=-1) == [3] * 4
    assert rc.load_balanced_view().map_async(abs, [-1]).get(-1) == [1]


def test_retries_exhausted_give_the_last_error(rc):
    rc[:].execute("import itertools; tries = itertools.count()", block=True)

    @ipp.interactive
    def always_fails():
        n = next(tries)  # noqa: F821
        raise ValueError(f"try {n}")

    lview = rc.load_balanced_view(targets=[1])
    with lview.temp_flags(retries=2):
        ar = lview.apply_async(always_fails)
    with pytest.raises(ipp.RemoteError) as info:
        ar.get(timeout=30)
    assert info.value.ename == "ValueError" and info.value.evalue == "try 2"
    assert rc[1]["next(tries)"] == 3  # three runs: the first and two retries


def test_what_cannot_run_is_refused_before_it_is_sent(rc):
    with pytest.raises(TypeError, match="callable"):
        rc[:].apply_sync(5)
    with pytest.raises(TypeError, match="callable"):
        rc.load_balanced_view().apply_async("len")
    with pytest.raises(TypeError, match="callable"):
        rc[:].map_sync(None, [1])
    with pytest.raises(TypeError, match="callable"):
        rc.load_balanced_view().map_sync(3, [1])
    with pytest.raises(TypeError, match="text"):
        rc[:].execute(5)
    assert not rc.outstanding


def test_r_is_get_and_unknown_attributes_are_attribute_errors(rc):
    ar = rc[0].apply_async(lambda: [1, 2])
    assert ar.r == [1, 2]
    assert list(rc[:].apply_async(lambda: 1)) == [1] * 4
    assert not hasattr(ar, "no_such_metadata_key")


def test_reference_to_a_missing_name_is_a_remote_name_error(rc):
    with pytest.raises(ipp.RemoteError) as info:
        rc[0].apply_sync(lambda x: x, ipp.Reference("not_there_at_all"))
    assert info.value.ename == "NameError"
    assert rc[0].apply_sync(lambda: "fine") == "fine"


def test_result_status_with_results_and_db_query_by_date(rc):
    import datetime

    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    ar = rc[0].apply_async(lambda: "stat")
    ar.get(timeout=30)
    status = rc.result_status(ar.msg_ids, status_only=False)
    assert status["completed"] == ar.msg_ids and status["pending"] == []
    assert status[ar.msg_ids[0]] == "stat"
    recs = rc.db_query(
        {"completed": {"$gte": before}, "msg_id": {"$in": ar.msg_ids}}, keys=["msg_id"]
    )
    assert [r["msg_id"] for r in recs] == ar.msg_ids
