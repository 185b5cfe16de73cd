"""``ipp.Reference``: engine-side names (or expressions) as arguments of apply and map."""

from __future__ import annotations

import sys

import cloudpickle
import pytest

import hpcpar as ipp

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import this module


def echo(*args, **kwargs):
    return args, kwargs


def test_reference_as_an_argument_is_each_engines_own_value(rc):
    view = rc[:]
    view.scatter("my_id", rc.ids, flatten=True, block=True)
    assert view.apply_sync(lambda x: x * 10, ipp.Reference("my_id")) == [i * 10 for i in rc.ids]


def test_reference_inside_lists_and_dicts(rc):
    rc[:].push({"a": 5}, block=True)
    r = ipp.Reference("a")
    args, kwargs = rc[0].apply_sync(echo, [r, 1], {"k": r, "t": (r,)})
    assert args == ([5, 1], {"k": 5, "t": (5,)}) and kwargs == {}


def test_reference_as_a_keyword_argument(rc):
    rc[:].push({"a": 6}, block=True)
    assert rc[1].apply_sync(echo, x=ipp.Reference("a")) == ((), {"x": 6})


def test_reference_to_an_expression(rc):
    rc[:].push({"g": [3, 4]}, block=True)
    assert rc[2].apply_sync(lambda v: v, ipp.Reference("g[0]")) == 3
    assert rc[2].apply_sync(lambda v: v, ipp.Reference("len(g) + g[1]")) == 6


def test_reference_in_map(rc):
    rc[:].push({"base": 100}, block=True)
    ref = ipp.Reference("base")
    assert rc[:].map_sync(lambda x, b: x + b, range(4), [ref] * 4) == [100, 101, 102, 103]


def test_reference_with_a_load_balanced_view(rc):
    rc[:].push({"a": 8}, block=True)
    assert rc.load_balanced_view().apply_sync(lambda v: v + 1, ipp.Reference("a")) == 9


def test_reference_passes_the_engines_object_itself(rc):
    rc[:].push({"items": []}, block=True)
    rc[0].apply_sync(lambda lst: lst.append("added"), ipp.Reference("items"))
    assert rc[0]["items"] == ["added"]


def test_reference_to_an_undefined_name_is_a_name_error(rc):
    with pytest.raises(ipp.RemoteError) as info:
        rc[0].apply_sync(lambda v: v, ipp.Reference("not_defined_here"))
    assert info.value.ename == "NameError"
    assert "not_defined_here" in str(info.value)


def test_reference_needs_a_python_expression(rc):
    with pytest.raises(TypeError, match="str"):
        ipp.Reference(3)
    with pytest.raises(ValueError, match="not a Python expression"):
        ipp.Reference("a b")
    assert repr(ipp.Reference("a")) == "<Reference: 'a'>"
