"""ipyparallel's hub-result API on a real cluster (SQLite task database): get_result of other
clients' tasks (AsyncHubResult with full metadata), owner=, task records with ipyparallel's
keys, resubmit, purge_local_results(ar)."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

import hpcpar as ipp
from hpcpar.client.hubqueries import AsyncHubResult


def _records(rc, msg_ids, keys=None, need=("received",)):
    """The hub's records of msg_ids, once written (records are written in batches)."""
    deadline = time.monotonic() + 20
    while True:
        recs = rc.db_query({"msg_id": {"$in": list(msg_ids)}, **{k: {"$exists": True} for k in need}}, keys=keys)
        if len(recs) == len(msg_ids) or time.monotonic() > deadline:
            return recs
        time.sleep(0.1)


@pytest.fixture()
def rc2(cluster):
    client = ipp.Client(profile="shared", timeout=30)
    yield client
    client.close()


def test_get_result_of_another_clients_task_is_an_async_hub_result_with_its_times(rc, rc2):
    ar = rc[0].apply_async(time.sleep, 0.3)
    ar.get(timeout=30)
    _records(rc, ar.msg_ids)
    hub = rc2.get_result(ar.msg_ids[0], block=False)
    assert isinstance(hub, AsyncHubResult) and isinstance(hub, ipp.AsyncResult)
    assert hub.get(timeout=30) is None
    md = hub.metadata
    assert md["submitted"] == ar.metadata["submitted"]
    assert md["engine_id"] == 0 and md["engine_uuid"] == ar.metadata["engine_uuid"]
    assert md["started"] is not None and md["completed"] >= md["started"]
    assert 0.3 <= hub.elapsed == hub.wall_time < 60


def test_get_result_of_a_running_task_of_another_client_waits_for_it(rc, rc2):
    ar = rc[1].apply_async(lambda: (__import__("time").sleep(1.0), "late")[1])
    time.sleep(0.2)
    hub = rc2.get_result(ar.msg_ids, block=False)
    assert isinstance(hub, AsyncHubResult)
    assert hub.get(timeout=30) == ["late"]  # a list of ids gives a list
    assert rc2.get_result(ar.msg_ids[0]).get(timeout=30) == "late"  # one id, its result
    assert hub.metadata[0]["submitted"] is not None and hub.elapsed > 0.5


def test_get_result_of_own_task_is_a_plain_async_result(rc):
    ar = rc[0].apply_async(abs, -3)
    again = rc.get_result(ar.msg_ids[0], block=False)
    assert type(again) is ipp.AsyncResult and again.get(timeout=30) == 3


def test_owner_true_drops_fetched_results_from_the_client_cache(rc, rc2):
    ar = rc[0].apply_async(abs, -4)
    ar.get(timeout=30)
    mid = ar.msg_ids[0]
    _records(rc, [mid])
    owned = rc2.get_result(mid, owner=True, block=False)
    assert owned.get(timeout=30) == 4
    assert mid not in rc2.results and mid not in rc2.metadata
    assert owned.get() == 4 and owned.metadata["engine_id"] == 0  # the owner keeps its copies
    kept = rc2.get_result(mid, owner=False, block=False)
    assert kept.get(timeout=30) == 4 and mid in rc2.results


def test_owner_true_keeps_results_this_client_submitted(rc):
    ar = rc[0].apply_async(abs, -5)
    ar.get(timeout=30)
    assert rc.get_result(ar.msg_ids[0], owner=True).get(timeout=30) == 5
    assert ar.msg_ids[0] in rc.results


def test_view_get_result_indexes_the_views_history_and_takes_owner(rc):
    view = rc.load_balanced_view()
    first = view.apply_async(abs, -6)
    view.apply_async(abs, -7).get(timeout=30)
    rc[0].apply_async(abs, -8).get(timeout=30)  # not in this view's history
    last = view.get_result(block=True)  # waits, and returns the AsyncResult (as ipyparallel)
    assert last.ready() and last.get() == 7  # the view's last task, not the client's
    assert view.get_result(0, block=False, owner=False).get(timeout=30) == first.get(timeout=30) == 6
    assert [r.get(timeout=30) for r in [view.get_result([0, -1], block=False)]] == [[6, 7]]


def test_task_records_have_ipyparallels_keys(rc):
    ar = rc[2].apply_async(abs, -9)
    ar.get(timeout=30)
    (rec,) = _records(rc, ar.msg_ids, need=("received", "result_header"))
    for key in ("msg_id", "header", "result_header", "engine_uuid", "client_uuid", "resubmitted", "queue", "error",
                "submitted", "started", "completed", "received", "stdout", "stderr"):
        assert key in rec, key
    assert rec["header"]["msg_id"] == ar.msg_ids[0] and rec["header"]["msg_type"] == "apply_request"
    assert isinstance(rec["header"]["date"], datetime)
    assert rec["result_header"]["msg_type"] == "apply_reply"
    assert rec["engine_uuid"] == ar.metadata["engine_uuid"] is not None
    assert rec["client_uuid"] == rc.session
    assert rec["resubmitted"] is None
    assert rec["queue"] == "mux" and rec["error"] is None
    lb = rc.load_balanced_view().apply_async(lambda: 1 / 0)
    with pytest.raises(ipp.RemoteError):
        lb.get(timeout=30)
    (failed,) = _records(rc, lb.msg_ids, keys=["queue", "error"])
    assert set(failed) == {"msg_id", "queue", "error"} and failed["queue"] == "task"
    error = failed["error"]  # the error's content, as ipyparallel records it
    assert (error["ename"], error["evalue"]) == ("ZeroDivisionError", "division by zero")
    assert "ZeroDivisionError" in error["traceback"][-1] and error["engine_info"]["engine_id"] in rc.ids
    mine = rc.db_query({"client_uuid": rc.session.session, "msg_id": ar.msg_ids[0]}, keys=["client_uuid", "header"])
    assert mine == [{"msg_id": ar.msg_ids[0], "client_uuid": rc.session, "header": rec["header"]}]
    with pytest.raises(ValueError, match="returned, not queried"):
        rc.db_query({"buffers": {"$exists": True}})


def test_resubmit_returns_an_async_hub_result_and_records_the_new_id(rc):
    ar = rc[3].apply_async(abs, -10)
    ar.get(timeout=30)
    _records(rc, ar.msg_ids)
    again = rc.resubmit(ar.msg_ids, block=False)
    assert isinstance(again, AsyncHubResult)
    assert again.get(timeout=30) == [10] and again.msg_ids != ar.msg_ids
    (old,) = _records(rc, ar.msg_ids, need=("resubmitted",))
    assert old["resubmitted"] == again.msg_ids[0]
    with pytest.raises(ipp.RemoteError) as info:
        rc.resubmit(["no-such-task"], block=False)
    assert info.value.ename == "KeyError"


def test_purge_local_results_accepts_an_async_result(rc):
    ar = rc[:].apply_async(abs, -11)
    ar.get(timeout=30)
    other = rc[0].apply_async(abs, -12)
    other.get(timeout=30)
    rc.purge_local_results(ar)
    assert not any(m in rc.results or m in rc.metadata for m in ar.msg_ids)
    assert other.msg_ids[0] in rc.results
    pending = rc[0].apply_async(time.sleep, 1)
    with pytest.raises(RuntimeError, match="not finished"):
        rc.purge_local_results(pending)
    pending.get(timeout=30)


def test_result_status_with_results_returns_and_keeps_them(rc, rc2):
    ar = rc[0].apply_async(abs, -13)
    ar.get(timeout=30)
    _records(rc, ar.msg_ids)
    status = rc2.result_status(ar.msg_ids, status_only=False)
    assert status["completed"] == ar.msg_ids and status["pending"] == []
    assert status[ar.msg_ids[0]] == 13 and rc2.results[ar.msg_ids[0]] == 13
