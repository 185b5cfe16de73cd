"""Where the hub keeps task records: SQLite (default), memory, or nowhere.

A record is a dict with the public keys below plus the request and reply
messages (as frame lists) so that results can be fetched by another client
and requests resubmitted. Backends are used from one thread only (the hub's
store thread), so they need no locking.
"""

from __future__ import annotations

import fnmatch
import json
import operator
import sqlite3
import struct
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Any

PUBLIC_KEYS = (
    "msg_id", "session", "msg_type", "label", "engine_id", "status", "attempts",
    "submitted", "started", "completed", "received", "stdout", "stderr", "ename", "evalue",
    "fname",  # the applied function's name (hpcpar's addition: the dashboard colours tasks by it)
    # ipyparallel's TaskRecord keys: the request's and reply's headers (dicts), the engine's
    # uuid, and on a resubmitted task the msg_id of its resubmission.
    "engine_uuid", "resubmitted", "header", "result_header",
)
HEADER_KEYS = ("header", "result_header")  # stored as the messages' JSON bytes, returned as dicts
ALIASES = {"client_uuid": "session"}  # ipyparallel's name for the submitting client's session
# ipyparallel's keys computed from stored ones when read: "queue" ('task' for load-balanced,
# 'mux' for direct requests) and "error" ({'ename', 'evalue'} of a failed task, else None).
DERIVED = {"queue": ("header",), "error": ("ename", "evalue")}
FRAME_KEYS = ("request", "reply")
# ipyparallel's db_query keys for a request's and a reply's data: the payload and buffers of the
# stored message, sent as extra frames of the reply (a record holds their indices there).
BUFFER_KEYS = {"buffers": "request", "result_buffers": "reply"}
ALL_KEYS = PUBLIC_KEYS + FRAME_KEYS
# A broadcast's records share one request (the same frames for every engine): a record may
# carry ``request_ref`` (the broadcast's msg_id) and SQLite keeps those frames once, in the
# table ``requests``, not once per engine. The memory backend shares the list object itself.
SHARED_REF = "request_ref"
_decode = json.JSONDecoder().decode
OPERATORS = ("$lt", "$gt", "$lte", "$gte", "$eq", "$ne", "$in", "$nin", "$exists", "$glob")
# Stored as epoch seconds (float); queries may give datetimes, ISO 8601 text or numbers.
DATE_KEYS = ("submitted", "started", "completed", "received")
NUMBER_KEYS = ("engine_id", "attempts")


# What the dashboard's task stream reads per finished task (see ``stream``).
STREAM_KEYS = ("msg_id", "engine_id", "fname", "label", "msg_type", "status", "started", "completed", "received")


class QueryError(ValueError):
    """A db_query that names an unknown key or operator."""


def pack_frames(frames: list[bytes]) -> bytes:
    head = struct.pack(f"<I{len(frames)}Q", len(frames), *map(len, frames))
    return head + b"".join(frames)


def unpack_frames(blob: bytes) -> list[bytes]:
    (n,) = struct.unpack_from("<I", blob)
    sizes = struct.unpack_from(f"<{n}Q", blob, 4)
    pos = 4 + 8 * n
    out = []
    for size in sizes:
        out.append(blob[pos : pos + size])
        pos += size
    return out


def check_query(query: dict[str, Any], keys: list[str] | None) -> None:
    if not isinstance(query, dict):
        raise QueryError(f"a query is a dict like {{'engine_id': 0}}, not {type(query).__name__}")
    for key, cond in query.items():
        if key in DERIVED:
            raise QueryError(f"{key!r} is returned, not queried: query {', '.join(DERIVED[key])} instead")
        if key in HEADER_KEYS and not (isinstance(cond, dict) and set(cond) <= {"$exists"}):
            raise QueryError(f"{key!r} is returned, not queried (only $exists): query msg_type, label, "
                             "session... instead")
        if key not in PUBLIC_KEYS and key not in ALIASES:
            raise QueryError(f"unknown key {key!r} in query; valid keys: {', '.join(PUBLIC_KEYS)}")
        if isinstance(cond, dict):
            for op in cond:
                if op not in OPERATORS:
                    raise QueryError(f"unknown operator {op!r} for {key!r}; valid: {', '.join(OPERATORS)}")
    for key in keys or ():
        if key not in ALL_KEYS and key not in ALIASES and key not in DERIVED and key not in BUFFER_KEYS:
            raise QueryError(f"unknown key {key!r} in keys; valid keys: {', '.join(ALL_KEYS)}")
    normalize_query(query)


def _epoch(key: str, value: Any) -> Any:
    """A date operand as epoch seconds: aware datetimes exactly, naive ones as local time
    (as ``datetime.timestamp`` and ipyparallel do), text parsed as ISO 8601."""
    if value is None:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)  # as given: epoch seconds are not rounded
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise QueryError(f"{key!r} is a time: compare it with a datetime, ISO 8601 text or epoch seconds, "
                             f"not {value!r}") from None
    if isinstance(value, datetime):
        return stored_time(value.timestamp())
    raise QueryError(f"{key!r} is a time: compare it with a datetime or epoch seconds, not {type(value).__name__}")


def _operand(key: str, op: str, arg: Any) -> Any:
    """``arg`` in the form stored for ``key`` (epoch seconds for times); wrong types are a QueryError."""
    if op == "$exists":
        return arg
    if op in ("$in", "$nin"):
        if isinstance(arg, (str, bytes)) or not hasattr(arg, "__iter__"):
            raise QueryError(f"{op} takes a list of values for {key!r}, not {arg!r}")
        return [_operand(key, "$eq", a) for a in arg]
    if op == "$glob":
        if key in DATE_KEYS or key in NUMBER_KEYS or not isinstance(arg, str):
            raise QueryError(f"$glob matches text keys against a pattern like 'step-*'; got {key!r}: {arg!r}")
        return arg
    if op in ("$lt", "$gt", "$lte", "$gte") and arg is None:
        raise QueryError(f"{op} needs a value for {key!r}; to find missing ones use {{'$exists': False}}")
    if key in DATE_KEYS:
        return _epoch(key, arg)
    if key in NUMBER_KEYS and arg is not None and (isinstance(arg, bool) or not isinstance(arg, (int, float))):
        raise QueryError(f"{key!r} is a number: compare it with a number, not {arg!r}")
    return arg


def normalize_query(query: dict[str, Any]) -> dict[str, Any]:
    """The query with every operand in the stored form, so both backends compare times as times."""
    out: dict[str, Any] = {}
    for key, cond in query.items():
        key = ALIASES.get(key, key)
        if isinstance(cond, dict):
            out[key] = {op: _operand(key, op, arg) for op, arg in cond.items()}
        else:
            out[key] = _operand(key, "$eq", cond)
    return out


_ORDER = {"$lt": operator.lt, "$gt": operator.gt, "$lte": operator.le, "$gte": operator.ge}


def stored_time(value: Any) -> float | None:
    """Epoch seconds rounded to the microsecond, the resolution of datetime: a time read back
    as a datetime and given to ``$eq`` then matches its record exactly."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # absent, or not a time hpcpar wrote
    return round(float(value), 6)


def _matches(value: Any, cond: Any) -> bool:
    if not isinstance(cond, dict):
        return value == cond
    for op, arg in cond.items():
        if op == "$exists":
            if (value is not None) != bool(arg):
                return False
            continue
        if op in ("$in", "$nin"):
            if (value in arg) != (op == "$in"):
                return False
            continue
        if op == "$eq":
            ok = value == arg
        elif op == "$ne":
            ok = value != arg
        elif op == "$glob":
            ok = isinstance(value, str) and fnmatch.fnmatchcase(value, arg)
        elif value is None:
            ok = False
        else:
            try:
                ok = _ORDER[op](value, arg)
            except TypeError:  # text against a number: no match, as in SQLite's ordering of types
                ok = False
        if not ok:
            return False
    return True


def _wanted(keys: list[str] | None) -> list[str]:
    """The stored keys to read for ``keys`` (None: every public key, and the aliases)."""
    if not keys:
        return list(PUBLIC_KEYS)
    stored: list[str] = ["msg_id"]
    for k in keys:
        stored.extend(DERIVED.get(k) or [BUFFER_KEYS.get(k) or ALIASES.get(k, k)])
    return list(dict.fromkeys(stored))


def _finish(rec: dict[str, Any], keys: list[str] | None) -> dict[str, Any]:
    """Headers decoded (with the record's own msg_id: a broadcast shares one header), aliases added."""
    for k in HEADER_KEYS:
        raw = rec.get(k)
        if isinstance(raw, (bytes, str)):
            try:
                value = _decode(raw.decode() if isinstance(raw, bytes) else raw)
            except ValueError:
                value = None
            if isinstance(value, dict) and k == "header":
                value["msg_id"] = rec["msg_id"]
            rec[k] = value
    everything = not keys
    if everything or "queue" in keys:
        head = rec.get("header")
        route = head.get("route") if isinstance(head, dict) else None
        rec["queue"] = None if route is None else "task" if route == "lb" else "mux"
    if everything or "error" in keys:
        ename = rec.get("ename")
        rec["error"] = None if ename is None else {"ename": ename, "evalue": rec.get("evalue")}
    for alias, key in ALIASES.items():
        if everything or alias in keys:
            rec[alias] = rec.get(key)
    for alias, key in BUFFER_KEYS.items():
        if not everything and alias in keys:
            frames = rec.get(key)
            rec[alias] = list(frames[3:]) if frames else []
    if not everything:  # stored keys read only to compute others
        for k in [k for k in rec if k != "msg_id" and k not in keys]:
            del rec[k]
    return rec


def _project(rec: dict[str, Any], keys: list[str] | None) -> dict[str, Any]:
    out = {k: rec.get(k) for k in _wanted(keys)}
    out["msg_id"] = rec["msg_id"]
    return _finish(out, keys)


class MemoryBackend:
    """Records in memory; the oldest finished ones are dropped past ``limit``."""

    name = "memory"

    def __init__(self, limit: int = 10_000) -> None:
        self.records: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.limit = limit

    def add(self, rec: dict[str, Any]) -> None:
        self.records[rec["msg_id"]] = rec
        while len(self.records) > self.limit:
            oldest = next(iter(self.records))
            self.records.pop(oldest)

    def update(self, msg_id: str, fields: dict[str, Any]) -> None:
        rec = self.records.get(msg_id)
        if rec is not None:
            rec.update(fields)

    def get(self, msg_id: str) -> dict[str, Any] | None:
        return self.records.get(msg_id)

    def find(self, query: dict[str, Any], keys: list[str] | None = None) -> list[dict[str, Any]]:
        query = normalize_query(query)
        return [
            _project(rec, keys)
            for rec in self.records.values()
            if all(_matches(rec.get(k), c) for k, c in query.items())
        ]

    def stream(self, since: float, until: float, limit: int) -> list[list[Any]]:
        """The newest ``limit`` records received in [since, until), oldest first, as rows of STREAM_KEYS."""
        rows: list[list[Any]] = []
        for rec in reversed(self.records.values()):
            received = rec.get("received")
            if received is not None and since <= received < until:
                rows.append([rec.get(k) for k in STREAM_KEYS])
                if len(rows) >= limit:
                    break
        return rows[::-1]

    def delete(self, query: dict[str, Any]) -> int:
        query = normalize_query(query)
        doomed = [m for m, rec in self.records.items() if all(_matches(rec.get(k), c) for k, c in query.items())]
        for m in doomed:
            del self.records[m]
        return len(doomed)

    def history(self) -> list[str]:
        return list(self.records)

    def commit(self) -> None:
        pass

    def close(self) -> None:
        pass


class NullBackend(MemoryBackend):
    """Stores nothing: results of other clients cannot be fetched, nor tasks resubmitted."""

    name = "none"

    def add(self, rec: dict[str, Any]) -> None:
        pass


class SQLiteBackend:
    """One table in a SQLite file (WAL mode), in the profile directory by default."""

    name = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.conn = sqlite3.connect(str(self.path), check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        cols = ", ".join(f"{k} {self._type(k)}" for k in ALL_KEYS if k != "msg_id")
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS tasks (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                          f"msg_id TEXT UNIQUE, {cols})")
        have = {row[1] for row in self.conn.execute("PRAGMA table_info(tasks)")}
        for k in ALL_KEYS:  # a database from an older hpcpar lacks the newer columns
            if k not in have:
                self.conn.execute(f"ALTER TABLE tasks ADD COLUMN {k} {self._type(k)}")
        self.conn.execute("CREATE INDEX IF NOT EXISTS tasks_session ON tasks (session)")
        self.conn.execute("CREATE INDEX IF NOT EXISTS tasks_engine ON tasks (engine_id)")
        # "finished since T" (the dashboard, twice a second): a range on this index instead
        # of a scan of every record (SQLite picks it for a two-sided range: $gt with $lt).
        self.conn.execute("CREATE INDEX IF NOT EXISTS tasks_received ON tasks (received)")
        # A broadcast's request, stored once for all its engines' records (SHARED_REF).
        self.conn.execute("CREATE TABLE IF NOT EXISTS requests (id TEXT PRIMARY KEY, request BLOB)")
        if SHARED_REF not in have:  # an older file gains the column in place
            self.conn.execute(f"ALTER TABLE tasks ADD COLUMN {SHARED_REF} TEXT")
        self.conn.commit()
        self._inserts: dict[tuple[str, ...], str] = {}  # INSERT statement per set of keys
        self._shared: str | None = None  # the last shared request written (a broadcast's records come together)

    @staticmethod
    def _type(key: str) -> str:
        if key in FRAME_KEYS or key in HEADER_KEYS:
            return "BLOB"
        if key in ("submitted", "started", "completed", "received"):
            return "REAL"
        if key in ("engine_id", "attempts"):
            return "INTEGER"
        return "TEXT"

    @staticmethod
    def _encode(key: str, value: Any) -> Any:
        if key in FRAME_KEYS and value is not None:
            return pack_frames(value)
        return value

    def add(self, rec: dict[str, Any]) -> None:
        # Once per task, on the hub thread that shares the GIL with the controller's loop:
        # the statement is built once per set of keys, and values are encoded inline.
        ref = rec.get(SHARED_REF)
        if ref is not None and rec.get("request") is not None:
            if ref != self._shared:  # the first of a broadcast's records writes its frames
                self.conn.execute("INSERT OR IGNORE INTO requests (id, request) VALUES (?, ?)",
                                  (ref, pack_frames(rec["request"])))
                self._shared = ref
            rec = {k: v for k, v in rec.items() if k != "request"}
        keys = tuple(k for k in (*ALL_KEYS, SHARED_REF) if k in rec)
        sql = self._inserts.get(keys)
        if sql is None:
            sql = self._inserts[keys] = (f"INSERT OR REPLACE INTO tasks ({', '.join(keys)}) "
                                         f"VALUES ({', '.join('?' * len(keys))})")
        self.conn.execute(sql, [pack_frames(v) if k in FRAME_KEYS and v is not None else v
                                for k, v in zip(keys, map(rec.__getitem__, keys))])

    def update(self, msg_id: str, fields: dict[str, Any]) -> None:
        keys = [k for k in fields if k in ALL_KEYS and k != "msg_id"]
        if keys:
            self.conn.execute(
                f"UPDATE tasks SET {', '.join(f'{k} = ?' for k in keys)} WHERE msg_id = ?",
                [*(self._encode(k, fields[k]) for k in keys), msg_id],
            )

    def _row(self, row: tuple, keys: list[str]) -> dict[str, Any]:
        rec = dict(zip(keys, row))
        for k in FRAME_KEYS:
            if rec.get(k) is not None:
                rec[k] = unpack_frames(rec[k])
        return rec

    @staticmethod
    def _columns(keys: list[str] | tuple[str, ...]) -> str:
        """SELECT list for ``keys``: a record's request is its own or the broadcast's shared one."""
        return ", ".join(f"COALESCE(request, (SELECT r.request FROM requests r WHERE r.id = tasks.{SHARED_REF}))"
                         if k == "request" else k for k in keys)

    def get(self, msg_id: str) -> dict[str, Any] | None:
        cur = self.conn.execute(f"SELECT {self._columns(ALL_KEYS)} FROM tasks WHERE msg_id = ?", (msg_id,))
        row = cur.fetchone()
        return self._row(row, list(ALL_KEYS)) if row else None

    def _where(self, query: dict[str, Any]) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        sql_ops = {"$lt": "<", "$gt": ">", "$lte": "<=", "$gte": ">=", "$eq": "=", "$ne": "IS NOT"}
        for key, cond in normalize_query(query).items():
            if not isinstance(cond, dict):
                cond = {"$eq": cond}
            for op, arg in cond.items():
                if op == "$exists":
                    clauses.append(f"{key} IS {'NOT ' if arg else ''}NULL")
                elif op in ("$in", "$nin"):
                    values = list(arg)
                    if not values:
                        clauses.append("0" if op == "$in" else "1")
                        continue
                    clauses.append(f"{key} {'NOT ' if op == '$nin' else ''}IN ({', '.join('?' * len(values))})")
                    args.extend(values)
                elif op == "$glob":
                    clauses.append(f"{key} GLOB ?")
                    args.append(arg)
                elif op == "$eq" and arg is None:
                    clauses.append(f"{key} IS NULL")
                else:
                    clauses.append(f"{key} {sql_ops[op]} ?")
                    args.append(arg)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def find(self, query: dict[str, Any], keys: list[str] | None = None) -> list[dict[str, Any]]:
        wanted = _wanted(keys)
        where, args = self._where(query)
        cur = self.conn.execute(f"SELECT {self._columns(wanted)} FROM tasks{where} ORDER BY seq", args)
        return [_finish(self._row(row, wanted), keys) for row in cur.fetchall()]

    def stream(self, since: float, until: float, limit: int) -> list[list[Any]]:
        """As MemoryBackend.stream: a walk down the index on 'received', no dict per record."""
        cur = self.conn.execute(f"SELECT {', '.join(STREAM_KEYS)} FROM tasks WHERE received >= ? AND received < ? "
                                "ORDER BY received DESC LIMIT ?", (since, until, limit))
        return [list(row) for row in reversed(cur.fetchall())]

    def delete(self, query: dict[str, Any]) -> int:
        where, args = self._where(query)
        cur = self.conn.execute(f"DELETE FROM tasks{where}", args)
        if cur.rowcount:  # shared requests no record refers to any more
            self.conn.execute(f"DELETE FROM requests WHERE id NOT IN "
                              f"(SELECT {SHARED_REF} FROM tasks WHERE {SHARED_REF} IS NOT NULL)")
            self._shared = None
        return cur.rowcount

    def history(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT msg_id FROM tasks ORDER BY seq")]

    def commit(self) -> None:
        self.conn.commit()

    def close(self) -> None:
        self.conn.commit()
        self.conn.close()


def open_backend(kind: str, path: Path, memory_limit: int = 10_000):
    if kind == "sqlite":
        return SQLiteBackend(path)
    if kind == "memory":
        return MemoryBackend(memory_limit)
    if kind == "none":
        return NullBackend()
    raise ValueError(f"unknown task database {kind!r}; choose sqlite, memory or none")


def meta_summary(meta_frame: bytes) -> dict[str, Any]:
    """stdout/stderr/error fields of a reply's meta frame, for the record."""
    try:
        meta = _decode(meta_frame.decode())  # not json.loads: it guesses the encoding of bytes first
    except ValueError:  # UnicodeDecodeError included
        return {}
    if not isinstance(meta, dict):
        return {}
    out = {k: meta.get(k) for k in ("stdout", "stderr", "ename", "evalue")}
    info = meta.get("engine_info")
    if isinstance(info, dict) and info.get("engine_uuid"):
        out["engine_uuid"] = info["engine_uuid"]
    return out
