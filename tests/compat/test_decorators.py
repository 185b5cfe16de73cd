"""ipyparallel's decorators: @require, @depend, @remote, @parallel (views' and top-level), @interactive."""

from __future__ import annotations

import math
import os
import sys

import cloudpickle
import pytest

import hpcpar as ipp

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import this module


def add_one(x):
    return x + 1


def test_require_binds_keyword_objects_on_the_engine(rc):
    @ipp.require(factor=3)
    def scale(x):
        return factor * x  # noqa: F821 - bound on the engine by @require

    assert rc.load_balanced_view().apply_sync(scale, 2) == 6
    assert rc[:].apply_sync(scale, 5) == [15] * 4


def test_require_binds_objects_in_the_engine_namespace(rc):
    @ipp.require(threshold=10)
    def noop():
        return None

    rc[0].apply_sync(noop)
    assert rc[0]["threshold"] == 10  # later tasks and %px see it too, as in ipyparallel


def test_require_ships_a_function_under_its_name(rc):
    @ipp.require(add_one)
    def twice_plus(x):
        return add_one(x) * 2

    assert rc[0].apply_sync(twice_plus, 4) == 10


def test_require_with_an_interactive_function(rc):
    @ipp.require(offset=100)
    @ipp.interactive
    def shifted(x):
        return x + offset  # noqa: F821

    assert rc.load_balanced_view().apply_sync(shifted, 1) == 101


def test_require_imports_modules_by_name_and_object(rc):
    @ipp.require("json", math)
    def both():
        return json.dumps([math.floor(2.5)])  # noqa: F821 - json is imported on the engine

    assert rc.load_balanced_view().apply_sync(both) == "[2]"


def test_require_rejects_an_object_given_positionally(rc):
    with pytest.raises(TypeError, match="by keyword"):
        ipp.require(42)


def test_depend_runs_only_where_the_condition_holds(rc):
    target_pid = rc[2].apply_sync(os.getpid)

    def on_pid(pid):
        import os

        return os.getpid() == pid

    @ipp.depend(on_pid, target_pid)
    def where():
        import os

        return os.getpid()

    lb = rc.load_balanced_view()
    assert {lb.apply_sync(where) for _ in range(4)} == {target_pid}


def test_parallel_call_splits_sequences_one_call_per_engine(rc):
    @rc[:].parallel(block=True)
    def chunk_info(part):
        import os

        return [(len(part), os.getpid())]

    info = chunk_info(range(10))
    assert [n for n, _ in info] == [3, 3, 2, 2]
    assert len({pid for _, pid in info}) == 4


def test_parallel_call_concatenates_the_results(rc):
    @rc[:].parallel(block=True)
    def doubled(part):
        return [x * 2 for x in part]

    assert doubled(range(10)) == [x * 2 for x in range(10)]
    assert doubled(iter(range(5))) == [0, 2, 4, 6, 8]


def test_parallel_map_is_element_wise(rc):
    @rc[:].parallel(block=True)
    def double(x):
        return x * 2

    assert double.map(range(7)) == [0, 2, 4, 6, 8, 10, 12]
    assert double.map("ab") == ["aa", "bb"]


def test_parallel_with_several_sequences(rc):
    @rc[:].parallel(block=True)
    def pairs(a, b):
        return list(zip(a, b))

    assert pairs(range(5), "abcde") == list(zip(range(5), "abcde"))
    with pytest.raises(ValueError, match="equal lengths"):
        pairs(range(5), "abc")


def test_parallel_non_blocking_returns_an_async_map_result(rc):
    @rc[:].parallel(block=False)
    def doubled(part):
        return [x * 2 for x in part]

    ar = doubled(range(6))
    assert isinstance(ar, ipp.AsyncMapResult)
    assert ar.get(timeout=30) == [0, 2, 4, 6, 8, 10]


def test_parallel_on_a_load_balanced_view_calls_once_per_chunk(rc):
    @rc.load_balanced_view().parallel(block=True, chunksize=2)
    def sizes(part):
        return [len(part)]

    assert sizes(range(5)) == [2, 2, 1]


def test_view_remote_decorator(rc):
    @rc[:].remote(block=True)
    def pid():
        import os

        return os.getpid()

    assert len(set(pid())) == 4

    @rc[0].remote(block=False)
    def later(x):
        return x

    assert later(3).get(timeout=30) == 3


def test_top_level_remote_and_parallel_take_the_view(rc):
    @ipp.remote(rc[1], block=True)
    def one():
        return 1

    @ipp.parallel(rc[:], block=True)
    def total(part):
        return [sum(part)]

    assert one() == 1
    assert sum(total(range(10))) == 45


def test_interactive_functions_see_the_engine_namespace(rc):
    rc[:].push({"engine_value": 7}, block=True)

    @ipp.interactive
    def read():
        return engine_value  # noqa: F821

    assert rc[:].apply_sync(read) == [7] * 4


def test_parallel_round_robin_gives_each_engine_every_nth_item(rc):
    @rc[:].parallel(dist="r", block=True)
    def tagged(part):
        return [(x, len(part)) for x in part]

    assert tagged(range(10)) == [(x, 3 if x % 4 < 2 else 2) for x in range(10)]

    @rc[:].parallel(dist="r", block=True)
    def double(x):
        return x * 2

    assert double.map(range(10)) == [x * 2 for x in range(10)]
