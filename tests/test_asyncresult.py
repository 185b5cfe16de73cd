"""AsyncResult: waiting, results, metadata, timing, iteration, Future behaviour."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from datetime import datetime

import pytest

import hpcpar


def slow_echo(x, delay=0.2):
    import time

    time.sleep(delay)
    print("echo", x)
    return x


def test_get_timeout_raises_builtin_timeout_error(rc):
    ar = rc[0].apply_async(slow_echo, 1, 0.5)
    with pytest.raises(TimeoutError):
        ar.get(timeout=0.05)
    assert hpcpar.error.TimeoutError is TimeoutError
    assert ar.get(timeout=10) == 1


def test_ready_wait_successful(rc):
    ar = rc[0].apply_async(slow_echo, 1, 0.3)
    assert not ar.ready()
    with pytest.raises(RuntimeError):  # as in ipyparallel 9
        ar.successful()
    assert ar.wait(0.01) is False
    assert ar.wait(10) is True
    assert ar.ready() and ar.successful()
    bad = rc[0].apply_async(lambda: 1 / 0)
    bad.wait(10)
    assert not bad.successful()


def test_get_dict_and_msg_ids(rc):
    ar = rc[[1, 3]].apply_async(lambda: __import__("os").getpid())
    d = ar.get_dict(timeout=10)
    assert set(d) == {1, 3}
    assert len(ar.msg_ids) == 2 and len(set(ar.msg_ids)) == 2
    assert len(ar) == 2


def test_metadata_and_timestamps(rc):
    before = time.time()
    ar = rc[2].apply_async(slow_echo, "x", 0.2)
    ar.get(timeout=10)
    md = ar.metadata
    assert md["engine_id"] == 2 and md.engine_id == 2
    assert md.status == "ok"
    for key in ("submitted", "started", "completed", "received"):
        assert isinstance(md[key], datetime)
    assert md.submitted <= md.started <= md.completed <= md.received
    assert before - 1 <= md.submitted.timestamp() <= time.time()
    assert (md.completed - md.started).total_seconds() >= 0.19
    assert md.stdout == "echo x\n" and ar.stdout == "echo x\n"
    assert ar.engine_id == 2
    assert ar.serial_time >= 0.19
    assert ar.wall_time >= ar.serial_time - 0.05
    assert ar.elapsed >= 0.19


def test_stderr_is_captured(rc):
    ar = rc[0].apply_async(lambda: print("oops", file=__import__("sys").stderr))
    ar.get(timeout=10)
    assert ar.stderr == "oops\n"


def test_progress_and_iteration(rc):
    ar = rc[:].apply_async(slow_echo, 5, 0.1)
    assert list(ar) == [5, 5, 5, 5]
    assert ar.progress == 4
    lb = rc.load_balanced_view()
    amr = lb.map_async(lambda x: x + 1, range(6))
    assert list(amr) == [1, 2, 3, 4, 5, 6]
    assert amr[2] == 3


def test_metadata_for_multiple_targets_is_a_list(rc):
    ar = rc[:].apply_async(slow_echo, 1, 0)
    ar.get(timeout=10)
    assert [md["engine_id"] for md in ar.metadata] == [0, 1, 2, 3]
    assert ar.stdout == ["echo 1\n"] * 4


def test_asyncresult_is_a_future(rc):
    ar = rc[0].apply_async(slow_echo, 7, 0.1)
    assert isinstance(ar, concurrent.futures.Future)
    done, _ = concurrent.futures.wait([ar], timeout=10)
    assert ar in done
    assert ar.result() == 7

    async def main():
        return await asyncio.wrap_future(rc[1].apply_async(slow_echo, 8, 0.1))

    assert asyncio.run(asyncio.wait_for(main(), 10)) == 8


def test_done_callbacks_fire(rc):
    seen = []
    ar = rc[0].apply_async(slow_echo, 3, 0.05)
    ar.add_done_callback(lambda f: seen.append(f.result()))
    ar.get(timeout=10)
    deadline = time.time() + 5
    while not seen and time.time() < deadline:
        time.sleep(0.01)
    assert seen == [3]


def test_exception_method(rc):
    ar = rc[0].apply_async(lambda: 1 / 0)
    exc = ar.exception(timeout=10)
    assert isinstance(exc, hpcpar.RemoteError) and exc.ename == "ZeroDivisionError"


def test_output_streams_while_the_task_runs(rc):
    code = "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.4)\n"
    seen = []
    rc._stream_callbacks.append(lambda msg_id, eid, name, text: seen.append((eid, name, text)))
    try:
        ar = rc[1].execute(code, block=False)
        deadline = time.time() + 5
        while "tick 0" not in ar.stdout and time.time() < deadline:
            time.sleep(0.02)
        assert "tick 0" in ar.stdout and not ar.ready()  # arrived before the end
        ar.get(timeout=10)
    finally:
        rc._stream_callbacks.clear()
    assert ar.stdout == "tick 0\ntick 1\ntick 2\n"  # the final reply has it all, once
    assert "".join(t for _, name, t in seen if name == "stdout") == ar.stdout
    assert {eid for eid, _, _ in seen} == {1}
