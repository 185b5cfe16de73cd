"""The hub's task database: queries, results of other clients, resubmit, purge, restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from cluster_helpers import hpcpar_cmd, start_cluster

import hpcpar
from hpcpar.controller.taskdb import MemoryBackend, QueryError, SQLiteBackend, check_query
from hpcpar.launchers.process import process_start_time


def record_attempt_then_sleep(path, delay):
    import time
    with open(path, "a") as f:
        f.write("x\n")
    n = len(open(path).read().split())
    if n == 1:
        time.sleep(delay)  # the first attempt is lost with the controller
    return n


def labelled(x):
    print("value", x)
    return x * 10


def test_db_query_operators(rc):
    lb = rc.load_balanced_view()
    t0 = time.time()
    with lb.temp_flags(label="step-a"):
        a = [lb.apply_async(labelled, i) for i in range(3)]
    with lb.temp_flags(label="other"):
        b = lb.apply_async(labelled, 99)
    for ar in [*a, b]:
        ar.get(timeout=10)
    time.sleep(0.2)  # records are written in batches off the hot path
    recs = rc.db_query({"label": {"$glob": "step-*"}}, keys=["msg_id", "label", "stdout", "engine_id", "completed"])
    assert sorted(r["msg_id"] for r in recs) == sorted(m for ar in a for m in ar.msg_ids)
    assert {r["stdout"] for r in recs} == {"value 0\n", "value 1\n", "value 2\n"}
    assert all(r["completed"].timestamp() >= t0 for r in recs)
    assert rc.db_query({"msg_id": {"$in": b.msg_ids}})[0]["label"] == "other"
    assert b.msg_ids[0] not in {r["msg_id"] for r in rc.db_query({"label": {"$ne": "other"}})}
    assert rc.db_query({"msg_id": {"$nin": [r["msg_id"] for r in recs]}, "label": {"$eq": "step-a"}}) == []
    late = rc.db_query({"completed": {"$gte": t0}, "label": {"$exists": True}}, keys=["msg_id"])
    assert len(late) >= 4
    assert rc.db_query({"completed": {"$lt": t0}, "label": "step-a"}) == []
    assert rc.db_query({"engine_id": {"$lte": 3}, "label": {"$in": ["other"]}})[0]["msg_id"] == b.msg_ids[0]
    assert rc.db_query({"engine_id": {"$gt": 100}}) == []
    with pytest.raises(ValueError, match="unknown key 'colour'"):
        rc.db_query({"colour": 1})
    history = rc.hub_history()
    assert b.msg_ids[0] in history and history.index(a[0].msg_ids[0]) < history.index(b.msg_ids[0])


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_backends_agree_on_queries(tmp_path, backend):
    db = MemoryBackend() if backend == "memory" else SQLiteBackend(tmp_path / "t.db")
    for i in range(5):
        db.add({"msg_id": f"m{i}", "label": f"l{i % 2}", "engine_id": i, "completed": float(i) if i else None,
                "reply": [b"sig", b"{}", b"{}", b"payload"]})
    db.commit()
    assert [r["msg_id"] for r in db.find({"engine_id": {"$gte": 3}})] == ["m3", "m4"]
    assert [r["msg_id"] for r in db.find({"label": {"$glob": "l1"}})] == ["m1", "m3"]
    assert [r["msg_id"] for r in db.find({"completed": {"$exists": False}})] == ["m0"]
    assert [r["msg_id"] for r in db.find({"engine_id": {"$nin": [0, 1, 2]}, "label": "l0"})] == ["m4"]
    assert db.get("m2")["reply"] == [b"sig", b"{}", b"{}", b"payload"]
    assert db.delete({"engine_id": {"$lt": 2}}) == 2
    assert db.history() == ["m2", "m3", "m4"]
    with pytest.raises(QueryError, match="unknown operator"):
        check_query({"engine_id": {"$regex": "x"}}, None)


def test_second_client_in_another_process_gets_results(rc, cluster):
    lb = rc.load_balanced_view()
    done = lb.apply_async(labelled, 7)
    done.get(timeout=10)
    running = lb.apply_async(lambda: (__import__("time").sleep(1.5), "late")[1])
    time.sleep(0.3)
    script = textwrap.dedent(f"""
        import hpcpar, json
        rc = hpcpar.Client({str(cluster.profile_dir.client_file())!r})
        done = rc.get_result({done.msg_ids[0]!r}).get(timeout=10)
        late = rc.get_result({running.msg_ids[0]!r}).get(timeout=20)
        status = rc.result_status([{done.msg_ids[0]!r}])
        try:
            rc.get_result("no-such-task").get(timeout=10)
            missing = "no error"
        except KeyError as e:
            missing = str(e)
        print(json.dumps([done, late, status["completed"], missing]))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    done_value, late_value, completed, missing = json.loads(out.stdout)
    assert done_value == 70 and late_value == "late" and completed == done.msg_ids
    assert "no task no-such-task" in missing


def test_resubmit_runs_the_stored_request_again(rc):
    view = rc[1]
    ar = view.apply_async(labelled, 4)
    assert ar.get(timeout=10) == 40
    time.sleep(0.2)
    again = rc.resubmit(ar.msg_ids)
    assert again.get(timeout=10) == [40]  # a list of msg_ids gives a list, as in ipyparallel
    assert again.msg_ids != ar.msg_ids and again.engine_id == [1]
    lb_ar = rc.load_balanced_view().apply_async(labelled, 5)
    lb_ar.get(timeout=10)
    time.sleep(0.2)
    assert rc.resubmit(lb_ar).get(timeout=10) == [50]


def test_purge(rc):
    ar = rc[0].apply_async(labelled, 1)
    ar.get(timeout=10)
    time.sleep(0.2)
    assert rc.db_query({"msg_id": ar.msg_ids[0]})
    rc.purge_results(jobs=[ar])
    assert ar.msg_ids[0] not in rc.results and ar.msg_ids[0] not in rc.metadata
    assert rc.db_query({"msg_id": ar.msg_ids[0]}) == []
    other = rc[0].apply_async(labelled, 2)
    other.get(timeout=10)
    time.sleep(0.2)
    rc.purge_everything()
    assert rc.db_query({"msg_id": other.msg_ids[0]}) == []
    assert rc.results == {}


def test_controller_restart_with_restore(hpcpar_dir):
    out = subprocess.run(hpcpar_cmd("start", "--profile", "restore", "-n", "2", "--daemonize", "--wait"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    try:
        rc = hpcpar.Client(profile="restore")
        before = dict(zip(rc.ids, rc[:].apply_sync(os.getpid)))
        finished = rc[0].apply_async(labelled, 3)
        finished.get(timeout=10)
        in_flight = rc[1].apply_async(time.sleep, 5)
        attempts = hpcpar_dir / "restore-attempts"
        lb = rc.load_balanced_view(targets=[0])
        with lb.temp_flags(retries=1):
            retried = lb.apply_async(record_attempt_then_sleep, str(attempts), 5)
        time.sleep(0.5)
        info = json.loads((hpcpar_dir / "profile_restore/security/hpcpar-client.json").read_text())
        os.kill(info["controller_pid"], signal.SIGKILL)
        time.sleep(0.5)
        out = subprocess.run(hpcpar_cmd("start", "--profile", "restore", "--restore"),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        # The task that was running when the controller died delivers its result (the engine
        # keeps it and sends it after re-attaching; test_crash_recovery.py has more).
        assert in_flight.get(timeout=60) is None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the controller's view, then ours
            registered = {k for k in rc.queue_status() if k != "unassigned"}
            if registered == set(before) and sorted(rc.ids) == sorted(before):
                break
            time.sleep(0.05)
        assert dict(zip(rc.ids, rc[:].apply_sync(os.getpid))) == before  # same engines, same ids
        with hpcpar.Client(profile="restore") as rc2:
            assert rc2.get_result(finished.msg_ids[0]).get(timeout=10) == 30
        # A load-balanced task running at the crash is not run again: its engine's result counts.
        assert retried.get(timeout=30) == 1
        assert len(attempts.read_text().split()) == 1
        rc.close()
    finally:
        subprocess.run(hpcpar_cmd("stop", "--profile", "restore"), timeout=60)
    assert all(process_start_time(p) is None for p in before.values())


def controller_rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def controller_rss_mb(pid: int) -> float:
    return round(controller_rss_kb(pid) / 1024, 1)


def wait_for_file(path, timeout):
    import os
    import time
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.path.exists(path)


def test_many_tasks_keep_controller_memory_bounded(hpcpar_dir, tmp_path):
    """20k load-balanced tasks in 4 bursts of 5000, each burst queued whole in the
    controller (both engines are busy while it is submitted): RSS bounded, a queued
    task costs little, and RSS between bursts is flat."""
    cluster, rc = start_cluster(2, "bounded")
    try:
        pid = json.loads(cluster.profile_dir.client_file().read_text())["controller_pid"]
        lb = rc.load_balanced_view()
        idle, queued = [], []
        for burst in range(4):
            lb.map_sync(abs, range(200))
            # The hub answers queries in order after the writes queued before them, so
            # this returns once every record so far is written.
            rc.db_query({"msg_id": "none"}, keys=["msg_id"])
            time.sleep(0.5)  # an idle hub gives freed heap back (controller/heap.py)
            idle.append(controller_rss_mb(pid))
            gate = tmp_path / f"go-{burst}"
            blockers = [rc[e].apply_async(wait_for_file, str(gate), 60) for e in rc.ids]
            ars = [lb.apply_async(abs, -i) for i in range(5000)]
            # Once the controller has read the burst and the hub has recorded it (both
            # answer in order) and been idle a moment, what remains is what queued tasks keep.
            rc.queue_status()
            rc.db_query({"msg_id": "none"}, keys=["msg_id"])
            time.sleep(0.5)
            queued.append(controller_rss_mb(pid))
            gate.touch()
            assert all(b.get(timeout=60) for b in blockers)
            assert [ar.get(timeout=120) for ar in ars][-1] == 4999
            rc.purge_local_results("all")
            last = rc.db_query({"msg_id": ars[-1].msg_ids[0]}, keys=["completed"])
            assert last and last[0]["completed"] is not None  # every request and result recorded
        report = f"controller RSS idle {idle} MB, with 5000 tasks queued {queued} MB"
        print(report)
        assert max(idle + queued) < 150, report
        # 5000 queued tasks cost about 12 MB on a fresh controller (Task objects, headers);
        # before the fix each also pinned up to ~18 KB of libzmq's receive buffers: 30-50 MB.
        assert queued[0] - idle[0] < 20, report
        # Flat: idle RSS after the first burst (which warms the heap and SQLite up) stays
        # within a few MB; before the fix the heap kept each burst's high-water mark and
        # idle RSS moved by 5-25 MB from burst to burst.
        later = idle[1:]
        assert max(later) - min(later) < 8 and later[-1] - later[0] < 6, report
    finally:
        cluster.stop_cluster_sync()


def test_client_caches_can_be_bounded(cluster):
    with hpcpar.Client(profile="shared", results_limit=5) as rc:
        ars = [rc[0].apply_async(labelled, i) for i in range(12)]
        assert [ar.get(timeout=10) for ar in ars] == [i * 10 for i in range(12)]
        assert len(rc.results) <= 5 and len(rc.metadata) <= 5
        time.sleep(0.2)  # the hub writes records in batches
        # A result dropped here is fetched again from the hub when asked for.
        first = rc.get_result(ars[0].msg_ids[0])
        assert first.get(timeout=10) == 0
        assert first.stdout == "value 0\n"


def first_len(x):
    return len(x)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_broadcast_request_is_stored_once(tmp_path, backend):
    db = MemoryBackend() if backend == "memory" else SQLiteBackend(tmp_path / "t.db")
    request = [b"sig", b"{}", b"{}", b"x" * 100_000]
    for eid in range(4):
        db.add({"msg_id": f"b-{eid}", "engine_id": eid, "request": request, "request_ref": "b"})
    db.add({"msg_id": "solo", "engine_id": 0, "request": [b"sig", b"{}", b"{}", b"solo"]})
    db.commit()
    assert all(db.get(f"b-{eid}")["request"] == request for eid in range(4))
    assert [r["request"] for r in db.find({"engine_id": 2}, ["msg_id", "request"])] == [request]
    assert db.get("solo")["request"][-1] == b"solo"
    if backend == "sqlite":
        conn = db.conn
        own = conn.execute("SELECT SUM(LENGTH(request)) FROM tasks").fetchone()[0]
        shared = conn.execute("SELECT SUM(LENGTH(request)) FROM requests").fetchone()[0]
        assert 100_000 < own + shared < 200_000  # once, not four times
        assert db.delete({"msg_id": {"$in": ["b-0", "b-1", "b-2"]}}) == 3
        assert db.get("b-3")["request"] == request  # still referenced: kept
        assert db.delete({"msg_id": "b-3"}) == 1
        assert conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 0
    else:
        assert len({id(rec["request"]) for rec in db.records.values() if rec.get("request_ref")}) == 1


def test_old_sqlite_file_gains_the_shared_request_table(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE tasks (seq INTEGER PRIMARY KEY AUTOINCREMENT, msg_id TEXT UNIQUE, request BLOB)")
    conn.execute("INSERT INTO tasks (msg_id, request) VALUES ('old', NULL)")
    conn.commit()
    conn.close()
    db = SQLiteBackend(path)
    assert db.get("old")["msg_id"] == "old"
    db.add({"msg_id": "new-0", "request": [b"a", b"b"], "request_ref": "new"})
    db.add({"msg_id": "new-1", "request": [b"a", b"b"], "request_ref": "new"})
    db.commit()
    assert db.get("new-1")["request"] == [b"a", b"b"]


def test_broadcast_to_four_engines_stores_its_megabyte_once(rc, cluster):
    import sqlite3

    big = b"\x01" * (1 << 20)
    ar = rc[:].apply_async(first_len, big)
    assert ar.get(timeout=60) == [1 << 20] * 4
    assert len(ar.msg_ids) == 4
    db = cluster.profile_dir.path / "tasks.db"
    marks = ",".join("?" * 4)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # records are committed in batches off the hot path
            done = conn.execute(f"SELECT COUNT(*) FROM tasks WHERE msg_id IN ({marks}) AND completed IS NOT NULL",
                                ar.msg_ids).fetchone()[0]
            if done == 4:
                break
            time.sleep(0.1)
        own = conn.execute(f"SELECT COALESCE(SUM(LENGTH(request)), 0) FROM tasks WHERE msg_id IN ({marks})",
                           ar.msg_ids).fetchone()[0]
        refs = [r[0] for r in conn.execute(f"SELECT DISTINCT request_ref FROM tasks WHERE msg_id IN ({marks})",
                                           ar.msg_ids)]
        shared = conn.execute(f"SELECT COALESCE(SUM(LENGTH(request)), 0) FROM requests WHERE id IN "
                              f"({','.join('?' * len(refs))})", refs).fetchone()[0]
    finally:
        conn.close()
    stored = own + shared
    assert (1 << 20) <= stored < 1.5 * (1 << 20), f"{stored} bytes stored for one 1 MB broadcast to 4 engines"
    for msg_id in ar.msg_ids:  # each engine's task still fetches and resubmits on its engine
        assert rc.get_result(msg_id).get(timeout=30) == 1 << 20
        again = rc.resubmit(msg_id)
        assert again.get(timeout=60) == [1 << 20]
        assert again.engine_id == [rc.db_query({"msg_id": msg_id}, ["engine_id"])[0]["engine_id"]]


def test_db_query_returns_buffers_of_requests_and_replies(rc):
    from hpcpar import serialize

    ar = rc[:].apply_async(first_len, b"\x02" * 50_000)
    assert ar.get(timeout=30) == [50_000] * 4
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        recs = rc.db_query({"msg_id": {"$in": ar.msg_ids}, "completed": {"$exists": True}},
                           keys=["msg_id", "buffers", "result_buffers"])
        if len(recs) == 4:
            break
        time.sleep(0.1)
    assert len(recs) == 4
    for rec in recs:  # a broadcast's shared request comes back for each engine's record
        assert any(b"\x02" * 50_000 in b for b in rec["buffers"])
        assert all(isinstance(b, bytes) for b in rec["buffers"] + rec["result_buffers"])
        assert serialize.loads(rec["result_buffers"][0], rec["result_buffers"][1:]) == 50_000
    with pytest.raises(ValueError, match="unknown key 'bufers'"):
        rc.db_query({}, keys=["bufers"])
