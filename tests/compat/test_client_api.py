"""ipyparallel's Client, method by method, as its users call it (shared cluster of 4 engines)."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sys
import time

import cloudpickle
import pytest

import hpcpar as ipp

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import this module


def test_top_level_names_match_ipyparallel():
    assert ipp.FIRST_COMPLETED == concurrent.futures.FIRST_COMPLETED
    assert ipp.FIRST_EXCEPTION == concurrent.futures.FIRST_EXCEPTION
    assert ipp.ALL_COMPLETED == concurrent.futures.ALL_COMPLETED
    for name in ("Client", "DirectView", "LoadBalancedView", "BroadcastView", "AsyncResult", "Reference",
                 "remote", "parallel", "require", "depend", "interactive", "Dependency", "View",
                 "RemoteFunction", "ParallelFunction", "ViewExecutor", "AsyncMapResult"):
        assert name in ipp.__all__ and getattr(ipp, name) is not None, name


def test_ids_len_and_iteration(rc):
    assert rc.ids == sorted(rc.ids) and len(rc.ids) == 4
    assert len(rc) == 4
    views = list(rc)
    assert all(isinstance(v, ipp.DirectView) for v in views)
    assert [v.targets for v in views] == rc.ids


def test_index_minus_one_is_the_last_engine(rc):
    last = rc.ids[-1]
    assert rc[-1].targets == last
    assert rc[-1].apply_sync(os.getpid) == rc[last].apply_sync(os.getpid)


def test_index_with_a_list_naming_an_engine_twice_runs_it_twice(rc):
    pids = rc[[0, 0]].apply_sync(os.getpid)
    assert len(pids) == 2 and pids[0] == pids[1] == rc[0].apply_sync(os.getpid)


def test_direct_view_minus_one_resolves_to_the_last_engine(rc):
    view = rc.direct_view(-1)
    assert view.targets == rc.ids[-1]
    assert view.apply_sync(os.getpid) == rc[rc.ids[-1]].apply_sync(os.getpid)


def test_load_balanced_view_minus_one_runs_only_on_the_last_engine(rc):
    lb = rc.load_balanced_view(-1)
    expected = rc[rc.ids[-1]].apply_sync(os.getpid)
    assert set(lb.map_sync(lambda _: os.getpid(), range(6))) == {expected}


def test_broadcast_view(rc):
    bv = rc.broadcast_view()
    assert isinstance(bv, ipp.BroadcastView) and isinstance(bv, ipp.DirectView)
    assert len(set(bv.apply_sync(os.getpid))) == 4
    coalescing = rc.broadcast_view(is_coalescing=True)
    assert coalescing.is_coalescing is True
    assert coalescing.apply_async(lambda: 7).get(timeout=30) == [7] * 4


def test_executor_method_returns_a_futures_executor(rc):
    ex = rc.executor()
    assert isinstance(ex, concurrent.futures.Executor)
    assert ex.submit(pow, 2, 5).result(timeout=30) == 32


def test_wait_takes_msg_ids_async_results_and_history_indices(rc):
    ar1 = rc[0].apply_async(time.sleep, 0.1)
    ar2 = rc[1].apply_async(time.sleep, 0.1)
    assert rc.wait([ar1, ar2.msg_ids[0], -1], timeout=30) is True
    assert ar1.ready() and ar2.ready()


def test_wait_takes_concurrent_futures(rc):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        local = pool.submit(time.sleep, 0.3)
        remote = rc.executor().submit(time.sleep, 0.3)
        assert rc.wait([local, remote], timeout=30) is True
        assert local.done() and remote.done()
        assert rc.wait(pool.submit(lambda: 1), timeout=30) is True


def test_wait_returns_false_on_timeout(rc):
    ar = rc[0].apply_async(time.sleep, 2)
    assert rc.wait(ar, timeout=0.1) is False
    assert rc.wait(ar, timeout=30) is True


def test_wait_interactive_waits_with_a_progress_display(rc, capsys):
    ar = rc[:].apply_async(time.sleep, 0.3)
    assert rc.wait_interactive(ar, interval=0.05, timeout=30) is True
    assert ar.ready()
    assert "tasks" in capsys.readouterr().err  # the progress display names what it counts


def test_wait_interactive_gives_up_silently_after_timeout(rc):
    ar = rc[0].apply_async(time.sleep, 2)
    assert rc.wait_interactive(ar, interval=0.05, timeout=0.2) is False
    assert not ar.ready()
    ar.get(timeout=30)


def test_wait_for_engines(rc):
    assert rc.wait_for_engines(4, timeout=30, interactive=False) is None
    fut = rc.wait_for_engines(4, timeout=30, block=False)
    assert isinstance(fut, concurrent.futures.Future)
    fut.result(timeout=30)


def test_abort_drops_a_queued_task(rc):
    blocker = rc[2].apply_async(time.sleep, 2)
    queued = rc[2].apply_async(lambda: "ran")
    rc.abort(queued)
    with pytest.raises(ipp.RemoteError):  # TaskAborted, a RemoteError as in ipyparallel
        queued.get(timeout=30)
    blocker.get(timeout=30)


def test_clear_resets_the_namespaces(rc):
    rc[:].push({"leftover": 1}, block=True)
    rc.clear(block=True)
    with pytest.raises(ipp.CompositeError):
        rc[:].pull("leftover", block=True)


def test_queue_status(rc):
    status = rc.queue_status()
    assert set(status) == {*rc.ids, "unassigned"}
    assert {"queue", "completed", "tasks"} <= set(status[rc.ids[0]])
    assert set(rc.queue_status(targets=rc.ids[0])) >= {"queue", "completed"}


def test_purge_local_results(rc):
    ar = rc[0].apply_async(lambda: 1)
    ar.get(timeout=30)
    (msg_id,) = ar.msg_ids
    assert msg_id in rc.results and msg_id in rc.metadata
    rc.purge_local_results(ar)
    assert msg_id not in rc.results and msg_id not in rc.metadata


def test_history_outstanding_results_and_metadata(rc):
    ar = rc[1].apply_async(time.sleep, 0.5)
    (msg_id,) = ar.msg_ids
    assert rc.history[-1] == msg_id and msg_id in rc.outstanding
    ar.get(timeout=30)
    assert msg_id not in rc.outstanding
    assert rc.results[msg_id] is None
    assert rc.metadata[msg_id]["engine_id"] == 1


def test_send_signal_interrupts_running_code(rc, tmp_path):
    started = tmp_path / "started"

    def sleeper(path):
        open(path, "w").close()
        time.sleep(30)

    ar = rc[3].apply_async(sleeper, str(started))
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists()
    rc.send_signal(signal.SIGINT, targets=3, block=True)
    with pytest.raises(ipp.RemoteError) as info:
        ar.get(timeout=30)
    assert info.value.ename == "KeyboardInterrupt"
    assert rc[3].apply_sync(lambda: "alive") == "alive"


def test_spin_methods_are_harmless(rc):
    rc.spin()
    rc.spin_thread()
    rc.stop_spin_thread()
    assert rc[0].apply_sync(lambda: 1) == 1


def test_close_and_context_manager(cluster):
    with ipp.Client(profile="shared", timeout=30) as client:
        assert len(client.ids) == 4
    with pytest.raises(RuntimeError, match="closed"):
        client[0].apply_sync(int)


def test_activate_minus_one_points_px_at_the_last_engine(rc):
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell

    from hpcpar.client import magics

    InteractiveShell.instance()
    magics._active.clear()
    try:
        view = rc.activate(-1)
        assert view.targets == rc.ids[-1] and view.block is True
        assert magics._active[""].view is view
    finally:
        magics._active.clear()


def test_shutdown_stops_one_engine(private_cluster):
    _, rc = private_cluster
    victim = rc.ids[-1]
    rc.shutdown(targets=victim, block=True)
    deadline = time.monotonic() + 30
    while victim in rc.ids and time.monotonic() < deadline:
        time.sleep(0.1)
    assert victim not in rc.ids


def test_client_from_a_cluster_knows_its_cluster(cluster):
    connect = getattr(cluster, "connect_client_sync", cluster.connect_client)  # the blocking twin
    assert connect().cluster is cluster  # the Cluster's own client: not closed here
    assert ipp.Client(profile="shared", timeout=30).cluster is None  # made by hand: no Cluster


def test_constructors_reach_the_same_cluster(cluster):
    path = cluster.profile_dir.client_file(cluster.cluster_id)
    clients = [
        ipp.Client(profile="shared", timeout=30),
        ipp.Client(str(path), timeout=30),
        ipp.Client(url_file=str(path), timeout=30),
        ipp.Client(profile_dir=str(cluster.profile_dir.path), timeout=30),
    ]
    try:
        assert len({c[0].apply_sync(os.getpid) for c in clients}) == 1
    finally:
        for c in clients:
            c.close()


def test_shutdown_with_hub_stops_the_controller(private_cluster):
    c, rc = private_cluster
    client_file = c.profile_dir.client_file(c.cluster_id)
    assert client_file.exists()
    rc.shutdown(hub=True)
    deadline = time.monotonic() + 30
    while client_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not client_file.exists()  # removed by the controller as it exits cleanly


def test_send_apply_and_execute_request_low_level_methods(rc):
    """ipyparallel's public low-level senders, called as its views call them: a socket of the
    client (or a view's _socket), an engine ident; the result is the message's future."""
    import concurrent.futures

    eid = rc.ids[1]
    fut = rc.send_apply_request(rc._mux_socket, os.getpid, ident=rc._engines[eid]["uuid"].encode())
    assert isinstance(fut, concurrent.futures.Future) and isinstance(fut.msg_id, str)
    assert fut.result(timeout=30) == rc[eid].apply_sync(os.getpid)
    assert ipp.AsyncResult(rc, fut).get(timeout=30) == fut.result()
    lb = rc.load_balanced_view()
    fut = rc.send_apply_request(lb._socket, pow, [2, 5], metadata={"targets": [eid]})
    assert fut.result(timeout=30) == 32 and fut.engine_id == eid
    fut = rc.send_execute_request(rc._mux_socket, "zz = 6 * 7", ident=eid)
    fut.result(timeout=30)
    assert rc[eid]["zz"] == 42
    with pytest.raises(TypeError, match="args must be tuple or list"):
        rc.send_apply_request(rc._mux_socket, abs, args=3, ident=eid)
    with pytest.raises(IndexError, match="no registered engine"):
        rc.send_apply_request(rc._mux_socket, abs, [1], ident=b"not-an-engine")


def test_direct_and_broadcast_view_resolve_targets_when_made_except_all(rc):
    """As ipyparallel's direct_view: targets other than "all" become engine ids at once (an
    unknown id raises IndexError there); "all" is evaluated at each call."""
    for make in (rc.direct_view, rc.broadcast_view):
        with pytest.raises(IndexError):
            make([0, 99])
        assert make(-1).targets == rc.ids[-1]
        assert make(slice(0, 2)).targets == rc.ids[:2]
        assert make(None).targets == rc.ids
        assert make().targets == "all"
