"""ipyparallel's TaskRecord (db_query, get_result metadata) with every key its docs list, on a real
cluster with each task database backend (SQLite, memory)."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timedelta, timezone

import cloudpickle
import pytest
from cluster_helpers import start_cluster

import hpcpar as ipp

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import this module

# The keys of ipyparallel's TaskRecord (docs: "IPython's Task Database"), and 'received'
# and 'metadata'/'result_metadata', which its hub records as well.
TASK_RECORD_KEYS = ("msg_id", "header", "metadata", "content", "submitted", "client_uuid", "engine_uuid",
                    "started", "completed", "resubmitted", "received", "result_header", "result_metadata",
                    "result_content", "queue", "execute_input", "execute_result", "error", "stdout", "stderr")


@pytest.fixture(scope="module", params=["sqlite", "memory"])
def db_rc(request):
    cluster, rc = start_cluster(2, f"records-{request.param}-{os.getpid()}",
                                controller_args_extra=["--db", request.param])
    yield rc
    rc.close()
    cluster.stop_cluster_sync()


def _record(rc, msg_id, keys=None):
    """The hub's record of msg_id once its reply is written (records are written in batches)."""
    deadline = time.monotonic() + 30
    while True:
        recs = rc.db_query({"msg_id": msg_id, "received": {"$exists": True}}, keys=keys)
        if recs or time.monotonic() > deadline:
            assert recs, f"no finished record of {msg_id}"
            return recs[0]
        time.sleep(0.1)


def shout(word):
    print(word.upper())
    return len(word)


def test_apply_record_has_every_key_with_ipyparallels_meaning(db_rc):
    rc = db_rc
    ar = rc[0].apply_async(shout, "hello")
    assert ar.get(timeout=30) == 5
    rec = _record(rc, ar.msg_ids[0])
    assert set(TASK_RECORD_KEYS) <= set(rec)
    assert "buffers" not in rec and "result_buffers" not in rec  # only when asked for, as in ipyparallel
    assert rec["content"] == {} and rec["metadata"] == {}  # an apply's content is empty
    assert rec["execute_input"] is None and rec["execute_result"] is None and rec["error"] is None
    assert rec["stdout"] == "HELLO\n" and rec["stderr"] == ""
    assert rec["result_content"]["status"] == "ok"
    md = rec["result_metadata"]
    assert md["status"] == "ok" and md["engine"] == rec["engine_uuid"] == ar.metadata["engine_uuid"]
    assert md["started"] == rec["started"] and isinstance(md["started"], datetime)
    assert rec["queue"] == "mux" and rec["client_uuid"] == rc.session.session
    assert rec["submitted"] <= rec["started"] <= rec["completed"] <= rec["received"]


def test_execute_record_has_its_input_result_and_output(db_rc):
    rc = db_rc
    ar = rc[1].execute("print('side'); 6 * 7", silent=False)
    ar.get(timeout=30)
    rec = _record(rc, ar.msg_ids[0])
    assert rec["execute_input"] == "print('side'); 6 * 7" == ar.metadata["execute_input"]
    assert rec["content"] == {"code": "print('side'); 6 * 7", "silent": False}
    assert rec["execute_result"]["data"]["text/plain"] == "42"
    assert rec["execute_result"]["execution_count"] == rec["result_content"]["execution_count"]
    assert rec["stdout"] == "side\n"
    # What another client fetches from the hub carries the same input.
    other = ipp.Client(rc._source, timeout=30)
    try:
        fetched = other.get_result(ar.msg_ids[0], block=True)
        assert fetched.metadata["execute_input"] == rec["execute_input"]
        assert fetched.metadata["execute_result"]["data"]["text/plain"] == "42"
    finally:
        other.close()


def test_failed_task_record_has_the_error_content(db_rc):
    rc = db_rc
    lb = rc.load_balanced_view()
    with lb.temp_flags(retries=0, timeout=60):
        ar = lb.apply_async(lambda: {}["missing"])
    with pytest.raises(ipp.RemoteError):
        ar.get(timeout=30)
    rec = _record(rc, ar.msg_ids[0])
    assert rec["queue"] == "task" and rec["metadata"]["timeout"] == 60
    err = rec["error"]
    assert err["ename"] == "KeyError" and "missing" in err["evalue"] and "KeyError" in err["traceback"][-1]
    assert rec["result_content"]["status"] == "error" and rec["result_content"]["ename"] == "KeyError"
    assert rec["result_metadata"]["status"] == "error"
    assert ar.metadata["error"]["ename"] == "KeyError"  # the client's metadata says the same


def test_queries_on_computed_keys_and_ipyparallels_examples(db_rc):
    rc = db_rc
    ex = rc[0].execute("a_name = 1")
    ap = rc[0].apply_async(abs, -1)
    ex.get(timeout=30), ap.get(timeout=30)
    _record(rc, ex.msg_ids[0]), _record(rc, ap.msg_ids[0])
    mine = {ex.msg_ids[0], ap.msg_ids[0]}
    found = rc.db_query({"execute_input": {"$glob": "a_name*"}}, keys=["execute_input"])
    assert [r["msg_id"] for r in found if r["msg_id"] in mine] == [ex.msg_ids[0]]
    assert found[0] == {"msg_id": ex.msg_ids[0], "execute_input": "a_name = 1"}
    muxed = {r["msg_id"] for r in rc.db_query({"queue": "mux", "msg_id": {"$in": list(mine)}}, keys=["msg_id"])}
    assert muxed == mine
    assert rc.db_query({"error": {"$ne": None}, "msg_id": {"$in": list(mine)}}) == []
    # The docs' examples: unfinished tasks, and tasks this client started in the last hour.
    assert all(r["completed"] is None for r in rc.db_query({"completed": None}, keys=["msg_id", "started"]))
    hour_ago = datetime.now() - timedelta(hours=1)
    recent = rc.db_query({"started": {"$gte": hour_ago}, "client_uuid": rc.session.session}, keys="msg_id")
    assert mine <= {r["msg_id"] for r in recent}
    # $mod and $all, which ipyparallel's backends emulate too.
    evens = rc.db_query({"engine_id": {"$mod": [2, 0]}, "msg_id": {"$in": list(mine)}}, keys=["engine_id"])
    assert {r["engine_id"] for r in evens} == {0}
    assert len(rc.db_query({"engine_id": {"$all": [0]}, "msg_id": {"$in": list(mine)}})) == 2


def test_hub_history_lists_the_recorded_tasks(db_rc):
    rc = db_rc
    ar = rc[1].apply_async(abs, -2)
    ar.get(timeout=30)
    _record(rc, ar.msg_ids[0])
    assert ar.msg_ids[0] in rc.hub_history()
    after = datetime.now(timezone.utc) + timedelta(days=1)
    assert rc.db_query({"submitted": {"$gt": after}}) == []
