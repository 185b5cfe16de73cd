"""execute() results: get() gives ExecuteReply objects, as in ipyparallel."""

from __future__ import annotations

import pytest

import hpcpar
from hpcpar.client.execute_reply import ExecuteReply


def test_get_returns_one_execute_reply_per_engine(rc):
    ar = rc[:].execute("import os\nprint('pid', os.getpid())\n6 * 7", silent=False, block=False)
    replies = ar.get(timeout=30)
    assert len(replies) == 4 and all(isinstance(r, ExecuteReply) for r in replies)
    pids = rc[:].apply_sync(__import__("os").getpid)
    for eid, (reply, pid) in enumerate(zip(replies, pids)):
        assert reply.engine_id == eid and reply["engine_id"] == eid
        assert reply.stdout == f"pid {pid}\n"
        assert reply.execute_result["data"] == {"text/plain": "42"}
        assert reply.execute_result["metadata"] == {}
        assert isinstance(reply.execution_count, int) and reply.execution_count >= 1
        assert reply.execution_count == reply.execute_result["execution_count"]
        assert repr(reply) == f"<ExecuteReply[{reply.execution_count}]: 42>"


def test_single_target_gives_the_bare_reply_and_counts_up(rc):
    first = rc[2].execute("1", silent=False).get(timeout=30)
    second = rc[2].execute("2", silent=False).get(timeout=30)
    assert isinstance(first, ExecuteReply) and second.execution_count == first.execution_count + 1
    assert second.data == {"text/plain": "2"}


def test_silent_execute_has_no_value_but_a_reply(rc):
    reply = rc[1].execute("x = 5\nx").get(timeout=30)  # silent=True is execute()'s default
    assert isinstance(reply, ExecuteReply)
    assert reply.execute_result is None and reply.data == {}
    assert repr(reply) == f"<ExecuteReply[{reply.execution_count}]: >"


def test_rich_reprs_show_the_engine_value(rc):
    code = "from IPython.display import HTML\nHTML('<b>bold</b>')"
    reply = rc[0].execute(code, silent=False).get(timeout=30)
    assert reply._repr_html_() == "<b>bold</b>"
    assert reply._repr_png_() is None
    data, md = reply._repr_mimebundle_()
    assert data["text/html"] == "<b>bold</b>"
    assert data["text/plain"] == f"Out[0:{reply.execution_count}]: <IPython.core.display.HTML object>"
    from IPython.lib.pretty import pretty

    assert pretty(reply) == f"Out[0:{reply.execution_count}]: <IPython.core.display.HTML object>"
    multi = rc[0].execute("print_me = list(range(30))\nprint_me", silent=False).get(timeout=30)
    assert pretty(multi).startswith(f"Out[0:{multi.execution_count}]: \n[0,\n 1,")  # pretty-printed there


def test_ipython_shows_replies_as_out_lines(rc):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    shell = InteractiveShell.instance()
    shell.user_ns["rc"] = rc
    with capture_output() as cap:
        res = shell.run_cell("rc[3].execute('10 * 10', silent=False).get(timeout=30)", store_history=True)
    assert res.success
    assert f"Out[3:{res.result.execution_count}]: 100" in cap.stdout


def test_failures_still_raise(rc):
    with pytest.raises(hpcpar.CompositeError):
        rc[:].execute("1 / 0").get(timeout=30)
    ar = rc[:].execute("1 / 0")
    ar.wait(30)
    assert not ar.successful()
