"""Engines that speak IPython: execute() and %px cells run as IPython cells on
the engines (magics, shell escapes, get_ipython()); engines without IPython
say so in one line; remote tracebacks show the user's code only."""

from __future__ import annotations

import os
import socket
import time

import noipython
import pytest

import hpcpar

pytest.importorskip("IPython")


HPCPAR = "hpcpar" + os.sep  # a path inside the package: none may appear in a user's traceback


def _value(ar):
    return ar.execute_result["data"]["text/plain"]


def test_get_ipython_works_in_cells(rc):
    code = "from IPython.core.interactiveshell import InteractiveShell\nisinstance(get_ipython(), InteractiveShell)"
    assert _value(rc[0].execute(code, silent=False, block=True)) == "True"
    # and it runs on the engine's namespace: names pushed by the client are there
    rc[0].push({"pushed": 7}, block=True)
    ar = rc[0].execute("get_ipython().user_ns['pushed'] * 6", silent=False, block=True)
    assert _value(ar) == "42"


def test_shell_escapes_run_on_the_engines(rc, tmp_path):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.txt").write_text("y")
    ar = rc[:].execute("!hostname", block=True)
    assert ar.stdout == [socket.gethostname() + "\n"] * 4  # captured, not lost in the engine's log
    ar = rc[0].execute("!echo to-err >&2; exit 3", block=True)
    assert ar.stdout == "to-err\n"
    assert rc[0].pull("_exit_code", block=True) == 3
    ar = rc[1].execute(f"files = !ls {tmp_path}\nfiles", silent=False, block=True)
    assert _value(ar) == "['a.txt', 'b.txt']"
    assert rc[1].pull("files", block=True) == ["a.txt", "b.txt"]


def test_line_and_cell_magics(rc):
    ar = rc[0].execute("%time total = sum(range(1000))", block=True)
    assert "Wall time" in ar.stdout
    assert rc[0].pull("total", block=True) == 499500
    ar = rc[0].execute("%%timeit -n 2 -r 2\nsum(range(100))\n", block=True)
    assert "per loop" in ar.stdout
    rc[0].push({"some_list": [1, 2]}, block=True)
    ar = rc[0].execute("%whos", block=True)
    assert "some_list" in ar.stdout and "list" in ar.stdout
    ar = rc[0].execute("len?", block=True)
    assert "Return the number of items" in ar.stdout


def test_run_script_on_the_engines(rc, tmp_path):
    script = tmp_path / "job.py"
    script.write_text("import os\nran_in = os.getpid()\nprint('script ran')\n")
    ar = rc[:].execute(f"%run {script}", block=True)
    assert ar.stdout == ["script ran\n"] * 4
    pids = rc[:].apply_sync(os.getpid)
    assert rc[:].pull("ran_in", block=True) == pids


def test_unknown_magic_is_a_usage_error_in_one_line(rc):
    with pytest.raises(hpcpar.RemoteError) as info:
        rc[2].execute("%no_such_magic", block=True)
    assert info.value.ename == "UsageError"
    assert info.value.traceback == "UsageError: Line magic function `%no_such_magic` not found."
    pytest.importorskip("matplotlib")
    with pytest.raises(hpcpar.RemoteError) as info:
        rc[2].execute("%matplotlib qt", block=True)
    assert info.value.traceback == ("UsageError: an engine has no screen for %matplotlib qt: "
                                    "use %matplotlib inline (figures are sent to the client)")


def test_matplotlib_inline_and_autoreload(private_cluster, tmp_path):
    pytest.importorskip("matplotlib")
    _, rc = private_cluster
    view = rc[0]
    ar = view.execute("%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()",
                      block=True)
    pngs = [o for o in ar.outputs if "image/png" in o["data"]]
    assert len(pngs) == 1, ar.outputs
    # the same figure is not sent again by the next cell
    assert view.execute("1", block=True).outputs == []

    mod = tmp_path / "reloaded_mod.py"
    mod.write_text("def answer():\n    return 1\n")
    view.execute(f"import sys\nsys.path.insert(0, {str(tmp_path)!r})", block=True)
    view.execute("%load_ext autoreload\n%autoreload 2\nimport reloaded_mod", block=True)
    assert _value(view.execute("reloaded_mod.answer()", silent=False, block=True)) == "1"
    mod.write_text("def answer():\n    return 2\n")
    later = time.time() + 5
    os.utime(mod, (later, later))  # a newer mtime, whatever the file system's resolution
    assert _value(view.execute("reloaded_mod.answer()", silent=False, block=True)) == "2"


def test_engine_without_ipython_says_so_in_one_line(private_cluster, tmp_path):
    cluster, rc = private_cluster
    known = list(rc.ids)
    engine = noipython.start_engine(noipython.python_without_ipython(tmp_path), cluster, tmp_path / "engine.log")
    try:
        eid = noipython.wait_for_new_engine(rc, known)
        view = rc[eid]
        # plain Python still works, with cell values
        assert _value(view.execute("x = 20\nx + 1", silent=False, block=True)) == "21"
        for code in ("%time x", "!hostname", "files = !ls", "%%timeit\nx", "x = 1\n%whos", "len?"):
            with pytest.raises(hpcpar.RemoteError) as info:
                view.execute(code, block=True)
            err = info.value
            assert err.ename == "SyntaxError"
            lines = err.traceback.splitlines()
            assert len(lines) == 1, err.traceback
            assert "this engine has no IPython: pip install ipython where the engines run" in lines[0]
        # a real syntax error is shown as Python shows it, without the engine's ast.py frames
        with pytest.raises(hpcpar.RemoteError) as info:
            view.execute("1 +", block=True)
        assert "ast.py" not in info.value.traceback and HPCPAR not in info.value.traceback
        assert "no IPython" not in info.value.traceback
        assert info.value.traceback.splitlines()[-1].startswith("SyntaxError: ")
        # the engine never imported IPython
        assert view.apply_sync(lambda: __import__("sys").modules.get("IPython")) is None
    finally:
        noipython.stop_engine(engine)


def test_apply_does_not_import_ipython(private_cluster):
    _, rc = private_cluster
    import sys

    assert rc[:].apply_sync(lambda: "IPython" in sys.modules) == [False, False]
    rc[0].execute("1", block=True)
    assert rc[:].apply_sync(lambda: "IPython" in sys.modules) == [True, False]


SCRIPT = '''\
def helper(d):
    return d["missing"]


def user_entry(d):
    return helper(d)
'''


def test_tracebacks_name_the_script_file_and_line(rc, tmp_path):
    script = tmp_path / "analysis.py"
    script.write_text(SCRIPT)
    ns = {"__name__": "__main__"}  # as `python analysis.py` defines them
    exec(compile(SCRIPT, str(script), "exec"), ns)
    with pytest.raises(hpcpar.RemoteError) as info:
        rc[0].apply_sync(ns["user_entry"], {})
    tb = info.value.traceback
    assert f'File "{script}", line 6, in user_entry' in tb
    assert f'File "{script}", line 2, in helper' in tb
    assert 'return d["missing"]' in tb
    assert "<dynamic-code>" not in tb and HPCPAR not in tb and "ast.py" not in tb


def test_tracebacks_of_cell_defined_functions_show_the_cell_lines(rc):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    res = shell.run_cell("def from_a_cell(d):\n    value = d['cell key']\n    return value\n", store_history=True)
    assert res.success
    f = shell.user_ns["from_a_cell"]
    filename = f.__code__.co_filename
    assert not os.path.exists(filename)  # only the client's linecache knows these lines
    with pytest.raises(hpcpar.RemoteError) as info:
        rc[1].apply_sync(f, {})
    tb = info.value.traceback
    assert f'File "{filename}", line 2, in from_a_cell' in tb
    assert "value = d['cell key']" in tb
    assert "<dynamic-code>" not in tb and HPCPAR not in tb


def test_execute_tracebacks_show_only_the_cell(rc):
    with pytest.raises(hpcpar.RemoteError) as info:
        rc[3].execute("def inner():\n    raise ValueError('from the cell')\ninner()\n", block=True)
    tb = info.value.traceback
    assert "raise ValueError('from the cell')" in tb and "inner()" in tb
    assert HPCPAR not in tb and "IPython" not in tb and "ast.py" not in tb


def test_clear_empties_the_namespace_but_keeps_the_shell(rc):
    rc[2].execute("leftover = 1\nleftover", silent=False, block=True)
    rc[2].clear(block=True)
    assert rc[2].execute("%whos", block=True).stdout == "Interactive namespace is empty.\n"
    ar = rc[2].execute("get_ipython() is not None and Out == {}", silent=False, block=True)
    assert _value(ar) == "True"  # the old values are gone from Out too
