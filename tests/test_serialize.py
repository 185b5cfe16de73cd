"""serialize: the function-pickle cache must never send a stale function."""

from __future__ import annotations

import math
import sys
import types

import cloudpickle

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


def _loads(f, times=2):
    """What an engine gets from requests that carry the same stand-in for ``f``."""
    loader = serialize.RequestLoader()
    payload = serialize.dumps((serialize._Pickled(cloudpickle.dumps(f, protocol=5)), (), {}))[0]
    return (loader.loads(payload)[0] for _ in range(times))


def test_a_resent_function_is_a_new_equal_function_each_time():
    f = _interactive("def scaled(x: int, *, k=3) -> int:\n    'doc'\n    return SCALE * x * k + math.floor(0.5)\n",
                     "scaled")
    f.__annotations__["x"] = int  # a type, as without `from __future__ import annotations`
    loaded = _loads(f, 3)
    first, second = next(loaded), next(loaded)
    assert first is not second and first.__globals__ is not second.__globals__
    for g in (first, second):
        assert g(2) == 12 and g(2, k=1) == 4
        assert (g.__name__, g.__qualname__, g.__doc__, g.__module__) == ("scaled", "scaled", "doc", "__main__")
        assert g.__annotations__ == {"x": int, "return": "int"} and g.__kwdefaults__ == {"k": 3}
    # What one call does to its function does not reach the next call's.
    for earlier in (first, second):
        earlier.__kwdefaults__["k"] = 100
        earlier.__annotations__["x"] = str
        earlier.__globals__["SCALE"] = 7
        earlier.tag = "set by an earlier task"
    third = next(loaded)
    assert third(2) == 12 and not hasattr(third, "tag") and third.__annotations__["x"] is int


def test_functions_with_mutable_state_are_unpickled_afresh_each_time():
    counter = _interactive("def outer():\n    n = [0]\n    def inc():\n        n[0] += 1\n        return n[0]\n"
                           "    return inc\n", "outer")()
    counter.__module__ = "__main__"
    first, second = _loads(counter)
    assert (first(), second()) == (1, 1)
    appends = _interactive("def appends():\n    ITEMS.append(0)\n    return len(ITEMS)\n", "appends")
    first, second = _loads(appends)
    assert (first(), second()) == (2, 2)
    with_default = _interactive("def f(a=[]):\n    a.append(1)\n    return len(a)\n", "f")
    first, second = _loads(with_default)
    assert (first(), second()) == (1, 1)


def test_a_module_replaced_in_sys_modules_is_seen_by_the_next_request():
    name = "hpcpar_test_replaced_module"
    old = sys.modules[name] = types.ModuleType(name)
    try:
        globals()["replaced"] = old
        f = _interactive("def which():\n    return replaced\n", "which")
        loader = serialize.RequestLoader()
        payload = serialize.dumps((serialize._Pickled(cloudpickle.dumps(f, protocol=5)), (), {}))[0]
        assert loader.loads(payload)[0]() is old
        new = sys.modules[name] = types.ModuleType(name)
        assert loader.loads(payload)[0]() is new
    finally:
        del sys.modules[name]
        globals().pop("replaced", None)


def test_the_cache_forgets_functions_that_are_gone():
    """A session that redefines a function many times must not keep every version."""
    import gc

    cache = serialize.FunctionCache()
    for i in range(50):
        f = _interactive(f"def redefined(x):\n    return x + {i}\n", "redefined")
        assert _call(cache.wrap(f), 1) == 1 + i
    del f
    globals().pop("redefined")
    gc.collect()
    assert len(cache._entries) == 0 and len(cache._names) == 0
