"""One backend's worker process: reads JSON commands on stdin, answers JSON lines.

Run by ``run.py``, never by hand. The user functions live here, in ``__main__``,
so every system ships them by value as it would an interactive user's function.
Anything the libraries print goes to stderr; only answers go to the real stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def noop() -> None:
    """The no-op task."""
    return None


def ident(x: Any) -> Any:
    """The per-item map function."""
    return x


def ident_batch(batch: Any) -> list[Any]:
    """``ident`` over one batch (dask has no chunksize, so map runs over batches)."""
    return [ident(x) for x in batch]


def handle(backend: Any, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one command; timed operations return their own seconds."""
    from backends.base import wait_gone

    if op == "prepare":
        backend.prepare()
        return {"versions": backend.versions()}
    if op == "start":
        t0 = time.perf_counter()
        backend.start(int(args["n"]))
        dt = time.perf_counter() - t0
        backend.record_pids()
        return {"seconds": dt, "n": backend.n, "pids": sorted(backend.cluster_pids)}
    if op == "stop":
        pids = set(backend.cluster_pids)
        t0 = time.perf_counter()
        backend.stop()
        t_call = time.perf_counter() - t0
        left = wait_gone(pids, float(args.get("grace", 10.0)))
        dt = time.perf_counter() - t0
        return {"seconds": dt, "call_s": t_call, "left_pids": sorted(left), "n": backend.n}
    method = getattr(backend, op)
    return method(**args)


def main() -> None:
    """Serve commands until ``exit`` or end of input."""
    from backends import load_backend

    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    backend = load_backend(sys.argv[1])
    backend.fns = {"noop": noop, "ident": ident, "ident_batch": ident_batch}
    for line in sys.stdin:
        msg = json.loads(line)
        op, args = msg["op"], msg.get("args", {})
        if op == "exit":
            break
        try:
            reply = {"ok": True, "result": handle(backend, op, args)}
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            reply = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "tb": traceback.format_exc(),
            }
        out.write(json.dumps(reply) + "\n")
    out.close()


if __name__ == "__main__":
    main()
