"""serialize: the function-pickle cache must never send a stale function."""

from __future__ import annotations

import math
import sys
import types

from hpcpar import serialize

SCALE = 2
ITEMS = [1]


def _interactive(src: str, name: str) -> types.FunctionType:
    """A function as if defined in a notebook: module __main__, globals of this module."""
    code = compile(src, "<cell>", "exec")
    exec(code, globals())
    f = globals()[name]
    f.__module__ = "__main__"
    return f


def _call(wrapped, *args):
    f, a, kw = serialize.loads(serialize.dumps((wrapped, args, {}))[0])
    return f(*a, **kw)


def test_an_unchanged_function_is_pickled_once():
    cache = serialize.FunctionCache()
    f = _interactive("def scaled(x, k=1):\n    return SCALE * x * k + math.floor(0.5)\n", "scaled")
    first = cache.wrap(f)
    assert first is not f and cache.wrap(f) is first
    assert _call(first, 3) == 6


def test_any_change_the_pickle_depends_on_makes_a_new_one():
    global SCALE
    cache = serialize.FunctionCache()
    f = _interactive("def scaled(x, k=1):\n    return SCALE * x * k\n", "scaled")
    first = cache.wrap(f)
    try:
        SCALE = 5  # a global it names, rebound
        second = cache.wrap(f)
        assert second is not first and _call(second, 1) == 5
    finally:
        SCALE = 2
    f.__defaults__ = (10,)
    third = cache.wrap(f)
    assert third is not second and _call(third, 1) == 20
    f.__doc__ = "changed"
    assert cache.wrap(f) is not third


def test_a_new_import_makes_a_new_pickle_for_functions_using_modules():
    cache = serialize.FunctionCache()
    f = _interactive("def get_pi():\n    return math.pi\n", "get_pi")
    first = cache.wrap(f)
    assert first is not f and cache.wrap(f) is first
    sys.modules["hpcpar_test_fake_module"] = types.ModuleType("hpcpar_test_fake_module")
    try:
        assert cache.wrap(f) is not first
    finally:
        del sys.modules["hpcpar_test_fake_module"]


def test_functions_that_depend_on_mutable_state_are_pickled_every_time():
    cache = serialize.FunctionCache()
    uses_list = _interactive("def items():\n    return ITEMS\n", "items")
    assert cache.wrap(uses_list) is uses_list
    ITEMS.append(2)
    try:
        assert _call(cache.wrap(uses_list)) == [1, 2]
    finally:
        ITEMS.pop()
    x = [1]
    closure = _interactive("def outer(x):\n    def inner():\n        return x\n    return inner\n", "outer")(x)
    closure.__module__ = "__main__"
    assert cache.wrap(closure) is closure
    with_default = _interactive("def f(a=[]):\n    return a\n", "f")
    assert cache.wrap(with_default) is with_default
    with_attr = _interactive("def g():\n    return 1\n", "g")
    with_attr.tag = "x"
    assert cache.wrap(with_attr) is with_attr


def test_module_functions_are_left_to_pickle_by_reference():
    cache = serialize.FunctionCache()
    assert cache.wrap(math.floor) is math.floor
    assert cache.wrap(serialize.dumps) is serialize.dumps
