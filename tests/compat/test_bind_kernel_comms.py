"""Comms and widgets on a bound engine kernel (bind_kernel), driven by jupyter_client as
JupyterLab drives a kernel: comm_open / comm_msg / comm_close both ways, comm_info, and
an ipywidgets slider whose value the frontend sets and the engine's namespace sees."""

from __future__ import annotations

import os
import uuid

import pytest
from cluster_helpers import bound_kernel

pytest.importorskip("IPython")
jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("comm")


@pytest.fixture()
def kernel(tmp_path):
    with bound_kernel(f"kernel-comms-{os.getpid()}", tmp_path) as (rc, kc):
        yield rc, kc


def _until_idle(kc, parent_id: str) -> list[dict]:
    """The IOPub messages of one request, up to its idle status."""
    seen = []
    while True:
        msg = kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") != parent_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return seen
        seen.append(msg)


def _execute(kc, code: str) -> list[dict]:
    msg_id = kc.execute(code)
    reply = kc.get_shell_msg(timeout=30)
    assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["status"] == "ok", reply["content"]
    return _until_idle(kc, msg_id)


def _send(kc, msg_type: str, content: dict) -> list[dict]:
    msg = kc.session.msg(msg_type, content)
    kc.shell_channel.send(msg)
    return _until_idle(kc, msg["header"]["msg_id"])


def test_comm_round_trips_both_ways(kernel):
    rc, kc = kernel
    _execute(kc, "import comm\n"
                 "def opened(c, msg):\n"
                 "    c.on_msg(lambda m: (print('got', m['content']['data']), c.send({'echo': m['content']['data']})))\n"
                 "    c.on_close(lambda m: globals().__setitem__('closed_by_frontend', True))\n"
                 "comm.get_comm_manager().register_target('echo', opened)")
    comm_id = uuid.uuid4().hex
    _send(kc, "comm_open", {"comm_id": comm_id, "target_name": "echo", "data": {}})
    info = kc.comm_info(target_name="echo", reply=True, timeout=10)["content"]
    assert info["status"] == "ok" and info["comms"] == {comm_id: {"target_name": "echo"}}

    out = _send(kc, "comm_msg", {"comm_id": comm_id, "data": {"x": 1}})
    assert [(m["msg_type"], m["content"]["data"]) for m in out if m["msg_type"] == "comm_msg"] == [
        ("comm_msg", {"echo": {"x": 1}})]
    assert "".join(m["content"]["text"] for m in out if m["msg_type"] == "stream") == "got {'x': 1}\n"
    assert all(m["content"]["comm_id"] == comm_id for m in out if m["msg_type"] == "comm_msg")

    _send(kc, "comm_close", {"comm_id": comm_id, "data": {}})
    assert rc[0].pull("closed_by_frontend", block=True) is True
    assert kc.comm_info(reply=True, timeout=10)["content"]["comms"] == {}

    # a comm the engine opens reaches the frontend, with its data
    out = _execute(kc, "c = comm.create_comm(target_name='to_frontend', data={'hello': 1})")
    opens = [m["content"] for m in out if m["msg_type"] == "comm_open"]
    assert len(opens) == 1 and opens[0]["target_name"] == "to_frontend" and opens[0]["data"] == {"hello": 1}
    out = _execute(kc, "c.send({'n': 2})")
    assert [m["content"]["data"] for m in out if m["msg_type"] == "comm_msg"] == [{"n": 2}]


def test_ipywidgets_slider_state_reaches_the_engine(kernel):
    pytest.importorskip("ipywidgets")
    rc, kc = kernel
    rc[0].execute("import ipywidgets\nslider = ipywidgets.IntSlider(value=3)", block=True)  # before any console
    out = _execute(kc, "slider2 = ipywidgets.IntSlider(value=5)\ndisplay(slider2)")
    opens = [m["content"] for m in out if m["msg_type"] == "comm_open"]
    assert any(o["target_name"] == "jupyter.widget" and o["data"]["state"].get("value") == 5 for o in opens)
    views = [m["content"]["data"] for m in out if m["msg_type"] == "display_data"]
    model_id = views[0]["application/vnd.jupyter.widget-view+json"]["model_id"]
    assert model_id in {o["comm_id"] for o in opens}
    # the frontend moves the slider: the engine's object changes
    _send(kc, "comm_msg", {"comm_id": model_id,
                           "data": {"method": "update", "state": {"value": 9}, "buffer_paths": []}})
    rc[0].execute("seen = slider2.value", block=True)
    assert rc[0].pull("seen", block=True) == 9
    # the engine changes it: the frontend gets the update
    out = _execute(kc, "slider2.value = 4")
    updates = [m["content"]["data"] for m in out if m["msg_type"] == "comm_msg"]
    assert {"method": "update", "state": {"value": 4}, "buffer_paths": []} in updates
