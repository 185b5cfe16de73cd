"""Interactive helpers outside the magics: wait_interactive, display_outputs,
stream_output, progress display modes, and display() on engines."""

from __future__ import annotations

import base64
import subprocess
import sys
import time

import noipython
import pytest

from hpcpar.progress import Progress


def slow_print(i, delay=0.3):
    import time

    print("item", i, flush=True)
    time.sleep(delay)
    return i


def test_import_hpcpar_does_not_import_ipython():
    code = "import sys, hpcpar; print('IPython' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_wait_interactive_shows_progress_lines_off_a_terminal(rc, capsys):
    ar = rc[:].apply_async(slow_print, 1, 0.4)
    assert ar.wait_interactive(interval=0.05, timeout=30) is True
    err = capsys.readouterr().err
    assert "slow_print: 4/4" in err.splitlines()
    ar2 = rc[0].apply_async(slow_print, 2, 3)
    t0 = time.monotonic()
    assert ar2.wait_interactive(interval=0.05, timeout=0.3) is False  # gives up quietly
    assert time.monotonic() - t0 < 2
    ar2.get(timeout=30)


def test_wait_interactive_first_exception_returns_early(rc):
    rc[0].push({"_eid": 0}, block=True)
    rc[1].push({"_eid": 1}, block=True)
    ar = rc[[0, 1]].execute("import time\nif _eid == 0:\n    1/0\ntime.sleep(3)", block=False)
    t0 = time.monotonic()
    ar.wait_interactive(interval=0.05, timeout=30, return_when="FIRST_EXCEPTION")
    assert time.monotonic() - t0 < 2.5 and not ar.ready()
    ar.wait(30)


def test_display_outputs_groupings(rc, capsys):
    ar = rc[[0, 1]].execute("import sys\nprint('out')\nprint('err', file=sys.stderr)\ndisplay('one')\n"
                            "display('two')\n'value'", silent=False, block=True)
    ar.display_outputs("engine")
    out, err = capsys.readouterr()
    assert out.splitlines() == ["[stdout:0] out", "[output:0]", "'one'", "[output:0]", "'two'", "Out[0:"
                                + str(ar.metadata[0]["execution_count"]) + "]: 'value'",
                                "[stdout:1] out", "[output:1]", "'one'", "[output:1]", "'two'",
                                f"Out[1:{ar.metadata[1]['execution_count']}]: 'value'"]
    assert err.splitlines() == ["[stderr:0] err", "[stderr:1] err"]
    ar.display_outputs("order")
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if not line.startswith("Out")] == [
        "[stdout:0] out", "[stdout:1] out", "[output:0]", "'one'", "[output:1]", "'one'",
        "[output:0]", "'two'", "[output:1]", "'two'"]
    ar.display_outputs(result_only=True)
    assert [line.split("]:")[1] for line in capsys.readouterr().out.splitlines()] == [" 'value'"] * 2
    with pytest.raises(ValueError):
        ar.display_outputs("sideways")


def test_stream_output_prints_as_output_arrives(rc, capsys):
    ar = rc[2].execute("import time\nfor i in range(3):\n    print('step', i, flush=True)\n    time.sleep(0.4)\n"
                       "print('tail', end='')", block=False)
    seen_live = None
    with ar.stream_output():
        deadline = time.monotonic() + 10
        while seen_live is None and time.monotonic() < deadline:
            time.sleep(0.05)
            if "step 0" in capsys.readouterr().out:  # pragma: no branch
                seen_live = not ar.ready()
        ar.wait(30)
    out = capsys.readouterr().out
    assert seen_live is True
    # everything printed exactly once, the unterminated tail finished with a newline
    assert out.splitlines() == ["[stdout:2] step 1", "[stdout:2] step 2", "[stdout:2] tail"]


def test_progress_modes(monkeypatch):
    assert Progress(3, "x", enabled=False).mode == "off"
    assert Progress(3, "x", widget=False).mode in ("lines", "tqdm")
    pytest.importorskip("ipywidgets")
    pytest.importorskip("IPython")
    with Progress(3, "engines", unit="engine", widget=True) as bar:
        assert bar.mode == "widget"
        bar.update_to(2)
        assert bar._widget.value == 2 and bar._label.value == "2/3 engines"
        bar.update_to(3)
    assert bar._widget.bar_style == "success"


def test_display_works_on_engines_without_ipython(private_cluster, tmp_path):
    cluster, rc = private_cluster
    known = list(rc.ids)
    engine = noipython.start_engine(noipython.python_without_ipython(tmp_path), cluster, tmp_path / "engine.log")
    try:
        eid = noipython.wait_for_new_engine(rc, known)
        _check_display_without_ipython(rc, eid)
    finally:
        noipython.stop_engine(engine)


def _check_display_without_ipython(rc, eid):
    code = (
        "class Rich:\n"
        "    def _repr_html_(self):\n        return '<b>rich</b>'\n"
        "    def _repr_png_(self):\n        return b'\\x89PNG fake'\n"
        "    def __repr__(self):\n        return 'Rich()'\n"
        "display(Rich(), {'k': 1})\n"
        "import sys\n'IPython' in sys.modules\n"
    )
    ar = rc[eid].execute(code, silent=False, block=True)
    assert ar.execute_result["data"] == {"text/plain": "False"}  # display() did not import IPython
    first, second = ar.outputs
    assert first["data"]["text/html"] == "<b>rich</b>" and first["data"]["text/plain"] == "Rich()"
    assert base64.b64decode(first["data"]["image/png"]) == b"\x89PNG fake"
    assert second["data"] == {"text/plain": "{'k': 1}"}
    # and the value of a cell is rich too
    ar = rc[eid].execute("Rich()", silent=False, block=True)
    assert ar.execute_result["data"]["text/html"] == "<b>rich</b>"


def test_outputs_stream_live_in_order_with_text(rc):
    live = []
    rc._display_callbacks.append(lambda mid, eid, output, index: live.append((eid, index, output["data"])))
    try:
        ar = rc[3].execute("import time\nprint('before')\ndisplay('shown')\nprint('after')\ntime.sleep(0.5)\n",
                           block=False)
        deadline = time.monotonic() + 10
        while not live and time.monotonic() < deadline:
            time.sleep(0.02)
        assert live == [(3, 0, {"text/plain": "'shown'"})] and not ar.ready()
        ar.get(timeout=30)
    finally:
        rc._display_callbacks.clear()
    assert ar.stdout == "before\nafter\n" and len(ar.outputs) == 1
