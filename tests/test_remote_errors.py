"""Remote failures: RemoteError, CompositeError, tracebacks, and engines that keep serving."""

from __future__ import annotations

import pytest

import hpcpar


def inner_failure(x):
    return {}[x]


def outer_failure(x):
    return inner_failure(x)


def test_remote_error_names_the_remote_frames(rc):
    with pytest.raises(hpcpar.RemoteError) as info:
        rc[0].apply_sync(outer_failure, "missing")
    err = info.value
    assert err.ename == "KeyError"
    assert err.evalue == "'missing'"
    assert "outer_failure" in err.traceback and "inner_failure" in err.traceback
    assert "hpcpar/engine" not in err.traceback  # the engine's own frames are not shown
    assert err.engine_info["engine_id"] == 0
    assert "[Engine 0] KeyError" in err._render_traceback_()[0]


def test_composite_error_collects_every_engine(rc):
    with pytest.raises(hpcpar.CompositeError) as info:
        rc[:].apply_sync(outer_failure, "k")
    err = info.value
    assert isinstance(err, hpcpar.RemoteError)
    assert sorted(e[3]["engine_id"] for e in err.elist) == [0, 1, 2, 3]
    with pytest.raises(hpcpar.RemoteError):
        err.raise_exception(0)


def test_partial_failure_is_composite_and_keeps_good_results(rc):
    ar = rc[:].map_async(lambda i: 1 / i, [1, 0, 2, 4])
    with pytest.raises(hpcpar.CompositeError) as info:
        ar.get(timeout=10)
    assert len(info.value.elist) == 1 and info.value.elist[0][3]["engine_id"] == 1
    assert rc.results[ar.msg_ids[0]] == [1.0]


@pytest.mark.parametrize("code", [
    "raise SystemExit(3)",
    "import sys; sys.exit()",
    "raise KeyboardInterrupt",
    "raise BaseException('base')",
])
def test_nothing_user_code_raises_kills_an_engine(rc, code):
    pid = rc[1].apply_sync(__import__("os").getpid)
    with pytest.raises(hpcpar.RemoteError):
        rc[1].execute(code, block=True)
    assert rc[1].apply_sync(__import__("os").getpid) == pid
    assert rc.ids == [0, 1, 2, 3]


def test_unpicklable_result_becomes_an_error_not_a_hang(rc):
    with pytest.raises(hpcpar.RemoteError) as info:
        rc[0].apply_sync(lambda: __import__("threading").Lock())
    assert info.value.ename == "SerializationError"
    assert "could not be sent back" in info.value.traceback
    assert rc[0].apply_sync(lambda: 2) == 2


def test_result_that_cannot_be_unpickled_locally_raises_at_get(rc):
    from hpcpar.serialize import SerializationError

    # The engine returns an instance of a class from a module only the engine can import
    # (pickled by reference, as any importable class is).
    rc[0].execute(
        "import sys, tempfile, pathlib\n"
        "d = tempfile.mkdtemp()\n"
        "pathlib.Path(d, 'hpcpar_only_on_engine.py').write_text('class OnlyHere:\\n    pass\\n')\n"
        "sys.path.insert(0, d)\n"
        "import hpcpar_only_on_engine\n"
        "obj = hpcpar_only_on_engine.OnlyHere()",
        block=True,
    )
    ar = rc[0].pull("obj", block=False)
    with pytest.raises(SerializationError):
        ar.get(timeout=10)
    assert rc[0].apply_sync(lambda: 3) == 3  # client and engine unharmed
