"""What a task record holds and what a query of records means, for every backend (taskdb.py).

A record is stored as flat fields (times as epoch seconds, the request's and reply's header
and meta frames as their JSON bytes, their data frames when small enough) and returned as
ipyparallel's TaskRecord: ``header``/``content``/``metadata``/``buffers`` of the request,
``result_header``/``result_content``/``result_metadata``/``result_buffers`` of the reply,
``execute_input``/``execute_result``/``error``/``stdout``/``stderr``, ``queue``, ``client_uuid``...
Keys computed from stored fields are computed when read, so writing a record (on the
controller's hot path) costs no more; queries on them are applied to the computed values.
"""

from __future__ import annotations

import fnmatch
import json
import operator
from datetime import datetime
from typing import Any

from .. import wire

# Stored fields that queries run on in the backend.
PUBLIC_KEYS = (
    "msg_id", "session", "msg_type", "label", "engine_id", "status", "attempts",
    "submitted", "started", "completed", "received", "stdout", "stderr", "ename", "evalue",
    "fname",  # the applied function's name (hpcpar's addition: the dashboard colours tasks by it)
    # ipyparallel's TaskRecord keys: the request's and reply's headers (dicts), the engine's
    # uuid, and on a resubmitted task the msg_id of its resubmission.
    "engine_uuid", "resubmitted", "header", "result_header",
)
HEADER_KEYS = ("header", "result_header")  # stored as the messages' JSON bytes, returned as dicts
META_KEYS = ("request_meta", "result_meta")  # the messages' meta frames (JSON bytes); internal
ALIASES = {"client_uuid": "session"}  # ipyparallel's name for the submitting client's session
# ipyparallel's keys computed from stored ones when read (and the stored ones they need).
DERIVED: dict[str, tuple[str, ...]] = {
    "queue": ("header",),  # 'task' for load-balanced requests, 'mux' for direct ones
    "error": ("ename", "evalue", "result_meta"),  # the error's content: ename, evalue, traceback
    "content": ("request_meta",),  # the request's content ({} for apply; code and silent for execute)
    "metadata": ("header",),  # the request's metadata: after, follow, timeout, targets, retries
    "execute_input": ("request_meta", "msg_type"),  # the code of an execute request
    "execute_result": ("result_meta",),  # an execute's value: data, metadata, execution_count
    "result_content": ("result_meta",),  # the reply's content: status (and the error, if any)
    "result_metadata": ("result_meta", "result_header", "engine_uuid"),  # started, engine, status
}
FRAME_KEYS = ("request", "reply")
# ipyparallel's db_query keys for a request's and a reply's data: the payload and buffers of the
# stored message, sent as extra frames of the reply (a record holds their indices there).
BUFFER_KEYS = {"buffers": "request", "result_buffers": "reply"}
ALL_KEYS = PUBLIC_KEYS + META_KEYS + FRAME_KEYS  # every stored field
OPERATORS = ("$lt", "$gt", "$lte", "$gte", "$eq", "$ne", "$in", "$nin", "$all", "$mod", "$exists", "$glob")
# Stored as epoch seconds (float); queries may give datetimes, ISO 8601 text or numbers.
DATE_KEYS = ("submitted", "started", "completed", "received")
NUMBER_KEYS = ("engine_id", "attempts")
# Fields of the request header that are ipyparallel's request metadata (hpcpar's name -> its).
_REQUEST_METADATA = {"after": "after", "follow": "follow", "timeout": "timeout", "retries": "retries",
                     "lb_targets": "targets", "label": "label"}
# Record fields sent with fetched results (AsyncHubResult metadata), and computed ones.
RESULT_FIELDS = ("submitted", "started", "completed", "received", "engine_id", "engine_uuid", "label", "status")
_decode = json.JSONDecoder().decode


class QueryError(ValueError):
    """A db_query that names an unknown key or operator."""


def check_query(query: dict[str, Any], keys: list[str] | None) -> None:
    if not isinstance(query, dict):
        raise QueryError(f"a query is a dict like {{'engine_id': 0}}, not {type(query).__name__}")
    for key, cond in query.items():
        if key in BUFFER_KEYS:
            raise QueryError(f"{key!r} is returned, not queried: query msg_type, label, session... instead")
        if key not in PUBLIC_KEYS and key not in ALIASES and key not in DERIVED:
            raise QueryError(f"unknown key {key!r} in query; valid keys: {', '.join(record_keys())}")
        if isinstance(cond, dict):
            for op in cond:
                if op not in OPERATORS:
                    raise QueryError(f"unknown operator {op!r} for {key!r}; valid: {', '.join(OPERATORS)}")
    for key in keys or ():
        if key not in PUBLIC_KEYS and key not in FRAME_KEYS and key not in ALIASES and key not in DERIVED \
                and key not in BUFFER_KEYS:
            raise QueryError(f"unknown key {key!r} in keys; valid keys: {', '.join(record_keys())}, "
                             f"{', '.join(BUFFER_KEYS)}")
    normalize_query(query)


def record_keys() -> list[str]:
    """The keys of a record as db_query returns it (without keys=): all but the buffers."""
    return [*PUBLIC_KEYS, *ALIASES, *DERIVED]


def split_query(query: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the backend matches, what is matched on the records as returned)."""
    stored, computed = {}, {}
    for key, cond in query.items():
        (computed if key in DERIVED or key in HEADER_KEYS else stored)[key] = cond
    return stored, computed


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
    if op in ("$in", "$nin", "$all"):
        if isinstance(arg, (str, bytes)) or not hasattr(arg, "__iter__"):
            raise QueryError(f"{op} takes a list of values for {key!r}, not {arg!r}")
        return [_operand(key, "$eq", a) for a in arg]
    if op == "$mod":
        if key not in NUMBER_KEYS or not (isinstance(arg, (list, tuple)) and len(arg) == 2
                                          and all(isinstance(a, int) and not isinstance(a, bool) for a in arg)
                                          and arg[0] != 0):
            raise QueryError(f"$mod takes [divisor, remainder] (ints, divisor not 0) for a number key "
                             f"({', '.join(NUMBER_KEYS)}); got {key!r}: {arg!r}")
        return list(arg)
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


def matches(value: Any, cond: Any) -> bool:
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
        elif op == "$all":  # MongoDB's: a list value holds every one; a single value equals every one
            ok = bool(arg) and (all(a in value for a in arg) if isinstance(value, (list, tuple))
                                else all(a == value for a in arg))
        elif value is None:
            ok = False
        elif op == "$mod":
            ok = isinstance(value, (int, float)) and value % arg[0] == arg[1]
        else:
            try:
                ok = _ORDER[op](value, arg)
            except TypeError:  # text against a number: no match, as in SQLite's ordering of types
                ok = False
        if not ok:
            return False
    return True


def wanted(keys: list[str] | None) -> list[str]:
    """The stored fields to read for ``keys`` (None: a whole record, buffers aside)."""
    if not keys:
        return [*PUBLIC_KEYS, *META_KEYS]
    stored: list[str] = ["msg_id"]
    for k in keys:
        stored.extend(DERIVED.get(k) or [BUFFER_KEYS.get(k) or ALIASES.get(k, k)])
    return list(dict.fromkeys(stored))


def _json(raw: Any) -> Any:
    if isinstance(raw, (bytes, memoryview, str)):
        try:
            return _decode(bytes(raw).decode() if not isinstance(raw, str) else raw)
        except ValueError:
            return None
    return raw


def _derive(rec: dict[str, Any], key: str, req: dict[str, Any] | None, rep: dict[str, Any] | None) -> Any:
    """ipyparallel's key ``key`` of a record whose request/reply metas are ``req``/``rep``."""
    if key == "queue":
        head = rec.get("header")
        route = head.get("route") if isinstance(head, dict) else None
        return None if route is None else "task" if route == "lb" else "mux"
    if key == "error":
        if rec.get("ename") is None:
            return None
        err = {"ename": rec["ename"], "evalue": rec.get("evalue"), "traceback": list((rep or {}).get("traceback") or [])}
        if (rep or {}).get("engine_info"):
            err["engine_info"] = rep["engine_info"]
        return err
    if key == "content":
        return {k: v for k, v in (req or {}).items() if k != "shm"}
    if key == "metadata":
        head = rec.get("header")
        head = head if isinstance(head, dict) else {}
        return {theirs: head[ours] for ours, theirs in _REQUEST_METADATA.items() if head.get(ours) is not None}
    if key == "execute_input":
        return (req or {}).get("code") if rec.get("msg_type") == "execute_request" else None
    if rep is None:  # no reply yet
        return None
    if key == "execute_result":
        return rep.get("execute_result")
    if key == "result_content":
        out = {k: rep[k] for k in ("status", "execution_count", "ename", "evalue", "traceback", "engine_info")
               if k in rep}
        out["status"] = "error" if rep.get("status") == "unmet" else rep.get("status", "ok")
        return out
    if key == "result_metadata":
        head = rec.get("result_header")
        head = head if isinstance(head, dict) else {}
        info = rep.get("engine_info") or {}
        return {"status": rep.get("status", head.get("status")), "started": head.get("started"),
                "completed": head.get("completed"), "engine": info.get("engine_uuid") or rec.get("engine_uuid"),
                "engine_id": info.get("engine_id", head.get("engine_id")),
                "dependencies_met": rep.get("ename") not in ("UnmetDependency", "ImpossibleDependency")}
    raise KeyError(key)


def finish(rec: dict[str, Any], keys: list[str] | None) -> dict[str, Any]:
    """A stored record as db_query returns it: headers decoded (with the record's own msg_id:
    a broadcast shares one header), computed keys added, internal fields dropped."""
    for k in HEADER_KEYS:
        if k in rec:
            value = _json(rec[k])
            if isinstance(value, dict) and k == "header":
                value["msg_id"] = rec["msg_id"]
            rec[k] = value if isinstance(value, dict) else None
    req, rep = (_json(rec.pop(k, None)) for k in META_KEYS)
    req = req if isinstance(req, dict) else None
    rep = rep if isinstance(rep, dict) else None
    everything = not keys
    for key in DERIVED:
        if everything or key in keys:
            rec[key] = _derive(rec, key, req, rep)
    for alias, key in ALIASES.items():
        if everything or alias in keys:
            rec[alias] = rec.get(key)
    for k in ("stdout", "stderr"):  # '' until output arrives, as in ipyparallel
        if (everything or k in keys) and rec.get(k) is None:
            rec[k] = ""
    for alias, key in BUFFER_KEYS.items():
        if not everything and alias in keys:
            frames = rec.get(key)
            _check_stored_buffers(rec.get("msg_id"), key, frames)
            rec[alias] = list(frames[3:]) if frames else []
    if not everything:  # stored keys read only to compute others
        for k in [k for k in rec if k != "msg_id" and k not in keys]:
            del rec[k]
    return rec


def _check_stored_buffers(msg_id: Any, key: str, frames: list[Any] | None) -> None:
    """Stored buffer frames go to the user only if they match their signed digests: the
    controller stores them unread (clients.py), so data altered in transit is caught here."""
    if not frames or len(frames) <= wire.MIN_FRAMES:
        return
    try:
        header = _decode(bytes(frames[1]).decode())
    except (ValueError, UnicodeDecodeError):
        header = {}
    problem = wire.buffers_problem(header if isinstance(header, dict) else {}, list(frames[4:]), False)
    if problem is not None:
        raise QueryError(f"the stored {key} of task {msg_id} is not returned: {problem}")


def need(keys: list[str] | None, computed: dict[str, Any]) -> list[str] | None:
    """The keys to compute: ``keys`` and those the computed part of a query tests (None: all)."""
    return [*keys, *(k for k in computed if k not in keys)] if keys else None


def select(records: Any, keys: list[str] | None, computed: dict[str, Any]) -> list[dict[str, Any]]:
    """Stored records (read as ``wanted(need(keys, computed))``) as returned, those matching
    the computed part of a query, with ``keys``."""
    if not computed:
        return [finish(rec, keys) for rec in records]
    extra = [k for k in computed if keys and k not in keys]
    out = []
    for rec in records:
        rec = finish(rec, need(keys, computed))
        if all(matches(rec.get(k), c) for k, c in computed.items()):
            for k in extra:
                rec.pop(k, None)
            out.append(rec)
    return out


def result_fields(rec: dict[str, Any]) -> dict[str, Any]:
    """What a fetched result's metadata takes from its record (AsyncHubResult)."""
    out = {k: rec.get(k) for k in RESULT_FIELDS}
    head = _json(rec.get("header"))
    if isinstance(head, dict):
        for k in ("after", "follow"):
            if head.get(k):
                out[k] = head[k]
    if rec.get("msg_type") == "execute_request":
        req = _json(rec.get("request_meta"))
        out["execute_input"] = req.get("code") if isinstance(req, dict) else None
    return out


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
