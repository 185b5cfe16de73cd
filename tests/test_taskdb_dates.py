"""Times in task-database queries compare as times: datetimes (naive or aware), ISO text or
epoch seconds, for every date key and with every backend (real SQLite file, memory, a real
controller for each)."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone

import pytest
from cluster_helpers import start_cluster

from hpcpar.controller.taskdb import (
    DATE_KEYS,
    MemoryBackend,
    QueryError,
    SQLiteBackend,
    stored_time,
)

BASE = 1_780_000_000.123456  # epoch seconds with microseconds


def _backend(kind: str, tmp_path):
    return MemoryBackend() if kind == "memory" else SQLiteBackend(tmp_path / "tasks.db")


def _filled(kind: str, tmp_path):
    db = _backend(kind, tmp_path)
    for i in range(4):  # task i: every time key is BASE + 10*i (+ key offset)
        db.add({"msg_id": f"m{i}", **{k: stored_time(BASE + 10 * i + j) for j, k in enumerate(DATE_KEYS)}})
    db.commit()
    return db


def _ids(records):
    return [r["msg_id"] for r in records]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("key", DATE_KEYS)
def test_aware_datetimes_compare_as_times_for_every_date_key(kind, key, tmp_path):
    db = _filled(kind, tmp_path)
    offset = DATE_KEYS.index(key)
    t2 = datetime.fromtimestamp(BASE + 20 + offset, timezone.utc)
    assert _ids(db.find({key: {"$lt": t2}})) == ["m0", "m1"]
    assert _ids(db.find({key: {"$lte": t2}})) == ["m0", "m1", "m2"]
    assert _ids(db.find({key: {"$gt": t2}})) == ["m3"]
    assert _ids(db.find({key: {"$gte": t2}})) == ["m2", "m3"]
    assert _ids(db.find({key: {"$eq": t2}})) == ["m2"]
    assert _ids(db.find({key: t2})) == ["m2"]
    assert _ids(db.find({key: {"$ne": t2}})) == ["m0", "m1", "m3"]
    assert _ids(db.find({key: {"$in": [t2, t2 + timedelta(seconds=10)]}})) == ["m2", "m3"]
    assert _ids(db.find({key: {"$nin": [t2]}})) == ["m0", "m1", "m3"]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_naive_datetimes_are_local_time_and_other_zones_are_the_same_instant(kind, tmp_path):
    db = _filled(kind, tmp_path)
    aware = datetime.fromtimestamp(BASE + 10, timezone.utc)
    naive_local = datetime.fromtimestamp(BASE + 10)  # local wall-clock time, no tzinfo
    elsewhere = aware.astimezone(timezone(timedelta(hours=-7)))
    for t in (aware, naive_local, elsewhere, aware.isoformat(), str(aware), BASE + 10):
        assert _ids(db.find({"submitted": {"$eq": t}})) == ["m1"], t
        assert _ids(db.find({"submitted": {"$gte": t}})) == ["m1", "m2", "m3"], t


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_time_operands_that_are_not_times_are_a_clear_error(kind, tmp_path):
    db = _filled(kind, tmp_path)
    with pytest.raises(QueryError, match="'completed' is a time.*not 'yesterday'"):
        db.find({"completed": {"$lt": "yesterday"}})
    with pytest.raises(QueryError, match=r"\$glob matches text keys"):
        db.find({"started": {"$glob": "2026*"}})
    with pytest.raises(QueryError, match="use {'\\$exists': False}"):
        db.delete({"received": {"$lt": None}})


def _run_tasks_and_query(rc):
    view = rc.load_balanced_view()
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    ars = [view.apply_async(time.sleep, 0.01) for _ in range(3)]
    for ar in ars:
        ar.get(timeout=30)
    msg_ids = [ar.msg_ids[0] for ar in ars]
    deadline = time.monotonic() + 20  # records are written in batches, off the reply path
    while time.monotonic() < deadline:
        recs = rc.db_query({"msg_id": {"$in": msg_ids}, "received": {"$exists": True}})
        if len(recs) == 3:
            break
        time.sleep(0.1)
    assert len(recs) == 3
    after = datetime.now(timezone.utc) + timedelta(seconds=1)
    mine = {"msg_id": {"$in": msg_ids}}
    for key in DATE_KEYS:
        assert sorted(_ids(rc.db_query({**mine, key: {"$gt": before}}))) == sorted(msg_ids), key
        assert rc.db_query({**mine, key: {"$lt": before}}) == [], key
        assert sorted(_ids(rc.db_query({**mine, key: {"$lt": after}}))) == sorted(msg_ids), key
        # A time read back from a record finds exactly that record.
        first = recs[0]
        assert isinstance(first[key], datetime) and first[key].tzinfo is not None
        assert _ids(rc.db_query({**mine, key: {"$eq": first[key]}})) == [first["msg_id"]], key
        assert first["msg_id"] in _ids(rc.db_query({**mine, key: {"$gte": first[key]}})), key
    naive_now = datetime.now() + timedelta(seconds=1)  # local time, as users type it
    assert sorted(_ids(rc.db_query({**mine, "completed": {"$lt": naive_now}}))) == sorted(msg_ids)
    assert rc.db_query({**mine, "completed": {"$gt": naive_now}}) == []


def test_db_query_datetimes_with_the_sqlite_database(rc):
    _run_tasks_and_query(rc)


def test_db_query_datetimes_with_the_memory_database():
    cluster, rc = start_cluster(1, f"dates-memory-{os.getpid()}", controller_args_extra=["--db", "memory"])
    try:
        _run_tasks_and_query(rc)
    finally:
        rc.close()
        cluster.stop_cluster_sync()
