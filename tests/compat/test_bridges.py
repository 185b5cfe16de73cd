"""ipyparallel's bridges on a real cluster: joblib backend, dask workers in the engines,
datapub.publish_data + ar.data, view.importer, use_dill."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import cloudpickle
import pytest
from systems import require_system

import hpcpar as ipp

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import this module


def engine_pid(x):
    import os

    return x, os.getpid()


def publish_progress(n):
    import time

    from hpcpar.datapub import publish_data

    for i in range(n):
        publish_data({"step": i, "done": False})
        time.sleep(0.1)
    publish_data({"done": True})
    return n


def test_joblib_parallel_runs_on_the_engines(rc):
    import joblib  # in the test extra: missing is a failure, not a skip
    rc.register_joblib_backend()
    pids = set(rc[:].apply_sync(os.getpid))
    with joblib.parallel_backend("ipyparallel"):
        out = joblib.Parallel(n_jobs=-1)(joblib.delayed(engine_pid)(i) for i in range(12))
    assert [x for x, _ in out] == list(range(12))
    ran_on = {pid for _, pid in out}
    assert ran_on <= pids and os.getpid() not in ran_on
    assert len(ran_on) > 1  # spread over several engines


def test_joblib_backend_of_a_view_uses_only_its_engines(rc):
    import joblib  # in the test extra: missing is a failure, not a skip
    rc.load_balanced_view(targets=[1]).register_joblib_backend("hpcpar-one")
    pid1 = rc[1].apply_sync(os.getpid)
    with joblib.parallel_backend("hpcpar-one"):
        out = joblib.Parallel(n_jobs=-1)(joblib.delayed(engine_pid)(i) for i in range(4))
    assert {pid for _, pid in out} == {pid1}


def test_joblib_backend_of_a_direct_view_runs_each_batch_once(rc):
    import joblib

    rc[[2, 3]].register_joblib_backend("hpcpar-direct")
    pids = set(rc[[2, 3]].apply_sync(os.getpid))
    with joblib.parallel_backend("hpcpar-direct"):
        out = joblib.Parallel(n_jobs=-1)(joblib.delayed(engine_pid)(i) for i in range(6))
    assert [x for x, _ in out] == list(range(6)) and {pid for _, pid in out} <= pids


def test_joblib_errors_reach_the_caller(rc):
    import joblib  # in the test extra: missing is a failure, not a skip
    rc.register_joblib_backend()
    with joblib.parallel_backend("ipyparallel"), pytest.raises(ipp.RemoteError, match="ZeroDivisionError"):
        joblib.Parallel(n_jobs=-1)(joblib.delayed(lambda x: 1 / x)(x) for x in [1, 0, 2])


def test_become_dask_runs_dask_work_on_the_engines(rc):
    import distributed  # noqa: F401 - in the test extra
    dask_client = rc.become_dask(nthreads=1)
    try:
        pids = set(rc[:].apply_sync(os.getpid))
        info = dask_client.scheduler_info()
        assert len(info["workers"]) == len(rc.ids)
        assert dask_client.gather(dask_client.map(abs, range(-8, 0))) == list(range(8, 0, -1))
        ran_on = set(dask_client.run(os.getpid).values())  # each worker's process
        assert ran_on == pids
    finally:
        dask_client.close()
        rc.stop_dask()
    assert rc[:].apply_sync(lambda: __import__("hpcpar.bridges.dask_workers").bridges.dask_workers._workers) == \
        [{}] * len(rc.ids)


def test_become_dask_with_engines_on_another_host(tmp_path):
    """Engines in the compute network namespace (10.200.0.2), controller on the head
    (10.200.0.1): each dask worker listens on its own host's address."""
    require_system("netns")
    import distributed  # noqa: F401 - in the test extra

    pdir = tmp_path / "profile_dask_netns"
    controller = subprocess.Popen([sys.executable, "-m", "hpcpar", "controller", "--profile-dir", str(pdir),
                                   "--ip", "10.200.0.1"])
    engines = [subprocess.Popen(["nsenter", "--net=/run/netns/hp-compute", sys.executable, "-m", "hpcpar",
                                 "engine", "--profile-dir", str(pdir), "--wait-for-file", "60"])
               for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        client_file = pdir / "security" / "hpcpar-client.json"
        while not client_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        with ipp.Client(str(client_file), timeout=30) as rc:
            rc.wait_for_engines(2, timeout=60, interactive=False)
            dask_client = rc.become_dask(nthreads=1)
            try:
                info = dask_client.scheduler_info()
                assert info["address"].startswith("tcp://10.200.0.1:")
                assert len(info["workers"]) == 2
                assert all(w.startswith("tcp://10.200.0.2:") for w in info["workers"])
                assert dask_client.submit(abs, -3).result(timeout=30) == 3
            finally:
                dask_client.close()
                rc.stop_dask()
    finally:
        for proc in [*engines, controller]:
            proc.terminate()
        for proc in [*engines, controller]:
            proc.wait(timeout=30)


def test_become_dask_with_a_nanny_runs_workers_in_processes_the_engines_started(rc):
    import distributed  # noqa: F401 - in the test extra
    import psutil

    dask_client = rc.become_dask(nanny=True, nthreads=1)
    try:
        engine_pids = set(rc[:].apply_sync(os.getpid))
        assert len(dask_client.scheduler_info()["workers"]) == len(rc.ids)
        assert dask_client.gather(dask_client.map(abs, range(-6, 0))) == list(range(6, 0, -1))
        # Each worker is a process of its own, started by the nanny inside an engine (as in ipyparallel).
        worker_pids = set(dask_client.run(os.getpid).values())
        assert len(worker_pids) == len(rc.ids) and not worker_pids & engine_pids
        assert {psutil.Process(p).parent().pid for p in worker_pids} == engine_pids
    finally:
        dask_client.close()
        rc.stop_dask()
    procs = []
    for pid in worker_pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _gone, alive = psutil.wait_procs(procs, timeout=30)  # stop_dask ends the nannies' workers
    assert not alive


def test_publish_data_fills_ar_data_while_running(rc):
    ar = rc[0].apply_async(publish_progress, 10)
    deadline = time.monotonic() + 30
    while "step" not in ar.data and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "step" in ar.data and not ar.ready()  # arrives while the task runs
    assert ar.get(timeout=30) == 10
    assert ar.data == {"step": 9, "done": True}
    assert ar.outputs == []  # published data is not a display output


def test_publish_data_outside_a_task_is_a_clear_error():
    from hpcpar.datapub import publish_data

    with pytest.raises(RuntimeError, match="inside a task"):
        publish_data({"x": 1})
    with pytest.raises(TypeError, match="takes a dict"):
        publish_data([1])


def test_view_importer_imports_here_and_on_the_engines(rc):
    view = rc[:]
    with view.importer:
        import json  # noqa: F401
    view.execute("imported = json.dumps([1])", block=True)  # json is in the engines' namespace
    assert view.pull("imported", block=True) == ["[1]"] * len(rc.ids)


def test_use_dill_sends_and_receives_with_dill(rc):
    import dill  # noqa: F401 - in the test extra
    view = rc[:]
    view.use_dill()
    try:
        offset = 5
        # dill ships functions of __main__ (a script, a notebook) by value, as ipyparallel's users have them
        assert view.apply_sync(ipp.interactive(lambda x: x + offset), 1) == [6] * len(rc.ids)
        doubler = rc[0].apply_async(ipp.interactive(lambda: lambda y: y * 2)).get(timeout=30)  # a result too
        assert doubler(4) == 8 and rc._pickler == "dill"
    finally:
        view.use_pickle()
    assert rc._pickler == "cloudpickle"
    assert rc[0].apply_sync(lambda: 3) == 3


def test_scikit_learn_n_jobs_runs_on_the_engines(rc):
    from datetime import datetime, timezone

    import joblib
    from sklearn.datasets import make_classification  # in the test extra: missing is a failure
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    rc.register_joblib_backend()
    X, y = make_classification(n_samples=120, n_features=6, random_state=0)
    start = datetime.now(timezone.utc)
    with joblib.parallel_backend("ipyparallel"):
        scores = cross_val_score(LogisticRegression(max_iter=200), X, y, cv=4, n_jobs=-1)
    # The scores scikit-learn computes here, and the folds ran as tasks (joblib batches) on the engines.
    assert list(scores) == pytest.approx(list(cross_val_score(LogisticRegression(max_iter=200), X, y, cv=4)))
    ran = rc.db_query({"fname": "BatchedCalls", "submitted": {"$gte": start}}, keys=["engine_id", "status"])
    assert 1 <= len(ran) <= 4  # one task per batch of folds
    assert all(r["status"] == "ok" and r["engine_id"] in rc.ids for r in ran)
