"""Where the hub keeps task records: SQLite (default), memory, or nowhere.

A record is a dict with the public keys below plus the request and reply
messages (as frame lists) so that results can be fetched by another client
and requests resubmitted. Backends are used from one thread only (the hub's
store thread), so they need no locking.
"""

from __future__ import annotations

import sqlite3
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any

# The record's keys and the meaning of queries live in taskrecord.py; re-exported here.
from .taskrecord import (  # noqa: F401
    ALIASES,
    ALL_KEYS,
    BUFFER_KEYS,
    DATE_KEYS,
    DERIVED,
    FRAME_KEYS,
    HEADER_KEYS,
    META_KEYS,
    NUMBER_KEYS,
    OPERATORS,
    PUBLIC_KEYS,
    QueryError,
    check_query,
    matches,
    meta_summary,
    need,
    normalize_query,
    select,
    split_query,
    stored_time,
    wanted,
)

# A broadcast's records share one request (the same frames for every engine): a record may
# carry ``request_ref`` (the broadcast's msg_id) and SQLite keeps those frames once, in the
# table ``requests``, not once per engine. The memory backend shares the list object itself.
SHARED_REF = "request_ref"

# What the dashboard's task stream reads per finished task (see ``stream``).
STREAM_KEYS = ("msg_id", "engine_id", "fname", "label", "msg_type", "status", "started", "completed", "received")


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


def _project(rec: dict[str, Any], keys: list[str] | None) -> dict[str, Any]:
    out = {k: rec.get(k) for k in wanted(keys)}
    out["msg_id"] = rec["msg_id"]
    return out


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
        stored, computed = split_query(query)
        stored = normalize_query(stored)
        want = need(keys, computed)
        return select((_project(rec, want) for rec in self.records.values()
                       if all(matches(rec.get(k), c) for k, c in stored.items())), keys, computed)

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
        doomed = [m for m, rec in self.records.items() if all(matches(rec.get(k), c) for k, c in query.items())]
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
        if key in FRAME_KEYS or key in HEADER_KEYS or key in META_KEYS:
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
                elif op == "$all":  # a single stored value: it equals every one given
                    clauses.append(" AND ".join([f"{key} = ?"] * len(arg)) if arg else "0")
                    args.extend(arg)
                elif op == "$mod":
                    clauses.append(f"{key} % ? = ?")
                    args.extend(arg)
                elif op == "$eq" and arg is None:
                    clauses.append(f"{key} IS NULL")
                else:
                    clauses.append(f"{key} {sql_ops[op]} ?")
                    args.append(arg)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def find(self, query: dict[str, Any], keys: list[str] | None = None) -> list[dict[str, Any]]:
        stored, computed = split_query(query)
        fields = wanted(need(keys, computed))
        where, args = self._where(stored)
        cur = self.conn.execute(f"SELECT {self._columns(fields)} FROM tasks{where} ORDER BY seq", args)
        return select((self._row(row, fields) for row in cur.fetchall()), keys, computed)

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
