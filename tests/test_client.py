"""Client: construction, engine ids, indexing, views, waiting, control."""

from __future__ import annotations

import os
import time

import pytest

import hpcpar
from hpcpar.connection import ConnectionFileError


def getpid():
    import os

    return os.getpid()


def test_constructors_all_reach_the_same_cluster(cluster):
    path = cluster.profile_dir.client_file()
    clients = [
        hpcpar.Client(profile="shared"),
        hpcpar.Client(str(path)),
        hpcpar.Client(url_file=str(path)),
        hpcpar.Client(profile_dir=str(cluster.profile_dir.path)),
        hpcpar.Client(__import__("json").loads(path.read_text())),
    ]
    try:
        assert all(c.ids == [0, 1, 2, 3] for c in clients)
        assert len(clients[0]) == 4
        pids = {c[0].apply_sync(getpid) for c in clients}
        assert len(pids) == 1  # the same engine 0 every time
    finally:
        for c in clients:
            c.close()


def test_url_file_is_honoured_not_ignored(tmp_path):
    # ipyparallel silently ignores url_file=; we must read exactly that file.
    with pytest.raises(ConnectionFileError, match=str(tmp_path / "nope.json")):
        hpcpar.Client(url_file=tmp_path / "nope.json", timeout=0.2)


def test_bad_connection_files_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConnectionFileError, match="not valid JSON"):
        hpcpar.Client(bad, timeout=0.1)
    bad.write_text('{"hello": 1}')
    with pytest.raises(ConnectionFileError, match="missing key"):
        hpcpar.Client(bad, timeout=0.1)
    with pytest.raises(ConnectionFileError, match="is a URL"):
        hpcpar.Client("tcp://127.0.0.1:1234", timeout=0.1)


def test_missing_profile_says_how_to_start(tmp_path):
    with pytest.raises(ConnectionFileError, match="hpcpar start"):
        hpcpar.Client(profile="never-started", timeout=0.1)


def test_connection_file_mode_is_0600(cluster):
    for path in (cluster.profile_dir.client_file(), cluster.profile_dir.engine_file()):
        assert os.stat(path).st_mode & 0o777 == 0o600


def test_indexing_gives_direct_views(rc):
    assert rc[0].targets == 0
    assert rc[-1].targets == 3
    assert rc[:].targets == [0, 1, 2, 3]
    assert rc[1:3].targets == [1, 2]
    assert rc[[0, 2]].targets == [0, 2]
    assert rc[range(0, 4, 2)].targets == [0, 2]
    with pytest.raises(IndexError, match="registered"):
        rc[99]
    with pytest.raises(TypeError):
        rc["x"]
    assert isinstance(rc.direct_view(), hpcpar.DirectView)
    assert isinstance(rc.load_balanced_view(), hpcpar.LoadBalancedView)
    # int targets return scalars, lists return lists
    rc.block = True
    assert isinstance(rc[0].apply(getpid), int)
    assert len(rc[[0, 1]].apply(getpid)) == 2


def test_block_is_inherited_by_views(rc):
    rc.block = True
    assert rc[:].block is True
    assert rc[:].apply(getpid).__class__ is list
    rc.block = False
    assert isinstance(rc[:].apply(getpid), hpcpar.AsyncResult)


def test_wait_and_outstanding(rc):
    view = rc[:]
    ar = view.apply_async(time.sleep, 0.3)
    assert rc.outstanding >= set(ar.msg_ids)
    assert rc.wait([ar], timeout=0.01) is False
    assert rc.wait([ar], timeout=10) is True
    assert not rc.outstanding & set(ar.msg_ids)
    assert rc.history[-4:] == ar.msg_ids


def test_wait_for_engines_times_out_with_clear_error(rc):
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="4 of 10 engines"):
        rc.wait_for_engines(10, timeout=0.5, interactive=False)
    assert time.monotonic() - start < 5


def test_queue_status_counts_direct_and_completed(rc):
    view = rc[1]
    before = rc.queue_status()[1]["completed"]
    ars = [view.apply_async(time.sleep, 0.2) for _ in range(3)]
    status = rc.queue_status()
    assert set(status) == {0, 1, 2, 3, "unassigned"}
    assert status[1]["queue"] >= 2
    for ar in ars:
        ar.get(timeout=10)
    assert rc.queue_status()[1]["completed"] == before + 3
    assert rc.queue_status(targets=1)["queue"] == 0


def test_abort_drops_queued_work(rc, tmp_path):
    view = rc[2]
    marker = tmp_path / "ran"
    blocker = view.apply_async(time.sleep, 1.0)

    def touch(path):
        open(path, "w").close()

    queued = view.apply_async(touch, str(marker))
    rc.abort(queued)
    with pytest.raises(hpcpar.TaskAborted):
        queued.get(timeout=10)
    blocker.get(timeout=10)
    assert not marker.exists()
    assert view.apply_sync(lambda: 7) == 7  # the engine keeps serving


def test_clear_resets_namespaces(rc):
    view = rc[:]
    view.block = True
    view["x"] = 5
    assert view["x"] == [5, 5, 5, 5]
    rc.clear(block=True)
    with pytest.raises(hpcpar.CompositeError) as info:
        view.pull("x")
    assert {e[0] for e in info.value.elist} == {"NameError"}


def test_context_manager_closes(cluster):
    with hpcpar.Client(profile="shared") as c:
        assert c[0].apply_sync(lambda: 1) == 1
    with pytest.raises(RuntimeError, match="closed"):
        c[0].apply_sync(lambda: 1)


def test_connect_times_out_with_clear_error(tmp_path):
    info = {"key": "k" * 64, "urls": ["tcp://127.0.0.1:9"], "role": "client"}
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="is the cluster running"):
        hpcpar.Client(info, timeout=0.5)
    assert time.monotonic() - start < 5


def _sleep_then(x, t=0.05):
    import time

    time.sleep(t)
    return x


def test_blocking_calls_from_many_threads_all_get_their_results(rc):
    # A blocking wait receives on its own thread when it can; the others are
    # served by whichever thread holds the receiving socket.
    import concurrent.futures

    def worker(i):
        return [rc[i % 4].apply_sync(_sleep_then, (i, j), 0.002 * (j % 3)) for j in range(20)]

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(worker, range(6), timeout=120))
    assert results == [[(i, j) for j in range(20)] for i in range(6)]


def test_results_arrive_without_a_waiting_thread_after_blocking_calls(rc):
    # After blocking calls, the I/O thread takes the receiving socket back, so a
    # result nobody waits for still arrives (done() only looks, never receives).
    for _ in range(5):
        assert rc[0].apply_sync(_sleep_then, 1, 0) == 1
    ar = rc[1].apply_async(_sleep_then, 2, 0.01)
    deadline = time.monotonic() + 10
    while not ar.done() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert ar.done() and ar.get(0) == 2


def test_a_done_callback_may_wait_for_another_result(rc):
    got = []
    ar = rc[0].apply_async(_sleep_then, 1, 0.05)
    ar.add_done_callback(lambda _: got.append(rc[1].apply_sync(_sleep_then, 2, 0)))
    assert ar.get(timeout=30) == 1
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == [2]


_CTRL_C_SCRIPT = """
import os, signal, sys, threading
import hpcpar

def slow():
    import time
    time.sleep(2)  # far longer than the timer below, even on a loaded machine
    return 7

rc = hpcpar.Client(profile="shared", timeout=30)
ar = rc[0].apply_async(hpcpar.interactive(slow))
threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    ar.get(timeout=20)
    print("not interrupted")
except KeyboardInterrupt:
    print("interrupted")
print(ar.get(timeout=20), rc[1].apply_sync(hpcpar.interactive(slow)))
print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
rc.close()
"""


def test_ctrl_c_in_a_blocking_wait_loses_no_result(cluster):
    # The waiting thread receives replies itself: a Ctrl-C must interrupt the
    # wait, never a delivery half-way, and leave the client working.
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _CTRL_C_SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["interrupted", "7", "7", "True"], out.stderr[-2000:]
