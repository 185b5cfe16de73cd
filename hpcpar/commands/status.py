"""``hpcpar status``: a cluster's engines, jobs and task totals.

Engines come from the controller (asked over the client connection): id,
host, pid, MPI rank, state (idle / busy), tasks done, queued and running,
and the age of the last heartbeat. Jobs come from the cluster state file
(what the launchers started: local processes or batch jobs, with their
state from the batch system). ``--watch`` redraws every few seconds until
Ctrl-C; ``--json`` prints one JSON document (one per refresh with --watch).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from . import add_profile_args, profile_dir_from, seconds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="engines, jobs and task totals of a running cluster")
    add_profile_args(p)
    p.add_argument("--watch", nargs="?", type=float, const=2.0, default=None, metavar="SECONDS",
                   help="refresh every SECONDS (default 2) until Ctrl-C")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=seconds, default=5.0,
                   help="seconds to wait for the controller's answer (default 5)")
    p.set_defaults(func=run)


# -- gathering ------------------------------------------------------------------------------

def _engines(pd: Any, cluster_id: str, timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    """The controller's view, or (None, why not)."""
    from ..client import Client
    from .handstarted import dead_message, find

    client_file = pd.client_file(cluster_id)
    if not client_file.exists():
        return None, f"no connection file {client_file}"
    hand = find(pd, cluster_id)
    if hand is not None and hand.alive is False:  # its own advice, not the one for 'hpcpar start'
        return None, dead_message(pd, cluster_id, hand)
    try:
        rc = Client(client_file, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - any failure to connect is reported, not raised
        return None, f"controller not reachable ({e})"
    try:
        reply = rc._request("engines_request", {}, timeout=timeout).meta
        reply["urls"] = list(rc._info.urls)
        reply["controller_pid"] = rc._info.controller_pid
        return reply, None
    except Exception as e:  # noqa: BLE001
        return None, f"controller did not answer ({e})"
    finally:
        rc.close()


def _engine_row(e: dict[str, Any]) -> dict[str, Any]:
    direct = int(e.get("queued") or 0)
    lb = int(e.get("running_lb") or 0)
    held = direct + lb
    running = 1 if held else 0  # an engine runs one task at a time, the rest wait there
    return {
        "id": e.get("id"),
        "host": e.get("hostname"),
        "pid": e.get("pid"),
        "mpi_rank": e.get("mpi_rank"),
        "state": "busy" if held else "idle",
        "done": int(e.get("completed") or 0),
        "queued": held - running,
        "running": running,
        "last_heartbeat": e.get("last_heartbeat_age"),
        # What it runs now, from its own sampler (engine/status.py): task, running_for, call ...
        "status": e.get("status"),
    }


def _launcher_jobs(role: str, launcher: Any) -> list[dict[str, Any]]:
    try:
        state = launcher.status()
    except Exception as e:  # noqa: BLE001 - a batch system that cannot be asked
        state = f"unknown ({e})"
    ids = launcher.labels()
    return [{
        "id": ", ".join(ids) if ids else "-",
        "system": launcher.name,
        "role": role,
        "n": getattr(launcher, "n", None),
        "state": state,
    }]


def _jobs(pd: Any, cluster_id: str) -> tuple[list[dict[str, Any]], str | None]:
    from ..cluster import Cluster, ClusterError

    path = pd.state_file(cluster_id)
    if not path.exists():
        return [], None
    try:
        cluster = Cluster.from_file(path)
    except (ClusterError, Exception) as e:  # noqa: BLE001
        return [], f"cannot read {path}: {e}"
    jobs: list[dict[str, Any]] = []
    if cluster.controller is not None:
        jobs += _launcher_jobs("controller", cluster.controller)
    for launcher in cluster.engine_sets:
        jobs += _launcher_jobs("engines", launcher)
    for launcher in getattr(cluster, "forwarder_sets", []):
        jobs += _launcher_jobs("forwarder", launcher)
    return jobs, None


def gather(pd: Any, cluster_id: str, timeout: float = 5.0) -> dict[str, Any]:
    controller, why = _engines(pd, cluster_id, timeout)
    jobs, jobs_error = _jobs(pd, cluster_id)
    engines = sorted((_engine_row(e) for e in (controller or {}).get("engines", [])), key=lambda r: r["id"])
    from ..engine.status import describe_activity
    from ..pool.control import describe as describe_pool

    try:
        pool = describe_pool(pd, cluster_id, registered=len(engines) if controller is not None else None)
    except RuntimeError as e:
        pool = {"error": str(e)}
    return {
        "pool": pool,
        "activity": describe_activity({e["id"]: e["status"] for e in engines if e.get("status")}),
        "profile": pd.name,
        "cluster_id": cluster_id,
        "time": time.time(),
        "controller": {
            "reachable": controller is not None,
            "error": why,
            "urls": (controller or {}).get("urls", []),
            "pid": (controller or {}).get("controller_pid"),
        },
        "engines": engines,
        "jobs": jobs,
        "jobs_error": jobs_error,
        "tasks": (controller or {}).get("tasks", {}),
    }


# -- showing ---------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _table(headers: list[str], rows: list[list[Any]], right: set[int]) -> list[str]:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def fmt(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if i in right else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    return [fmt(headers)] + [fmt(r) for r in cells]


def render(status: dict[str, Any]) -> str:
    lines = []
    name = status["profile"] + (f" (cluster id {status['cluster_id']})" if status["cluster_id"] else "")
    ctl = status["controller"]
    if ctl["reachable"]:
        lines.append(f"cluster {name}: controller pid {_cell(ctl['pid'])} at {', '.join(ctl['urls'])}")
    else:
        lines.append(f"cluster {name}: {ctl['error']}")
    lines.append("")
    engines = status["engines"]
    n_busy = sum(1 for e in engines if e["state"] == "busy")
    lines.append(f"ENGINES: {len(engines)} ({n_busy} busy, {len(engines) - n_busy} idle)")
    if engines:
        rows = [[e["id"], e["host"], e["pid"], e["mpi_rank"], e["state"], e["done"], e["queued"], e["running"],
                 f"{e['last_heartbeat']:.1f} s ago" if e["last_heartbeat"] is not None else None]
                for e in engines]
        lines += _table(["ID", "HOST", "PID", "MPI RANK", "STATE", "DONE", "QUEUED", "RUNNING", "HEARTBEAT"],
                        rows, right={0, 2, 3, 5, 6, 7})
        if status.get("activity"):
            lines += ["", f"NOW: {status['activity']}"]
        for e in engines:
            st = e.get("status") or {}
            if st.get("task") and st.get("call"):
                lines.append(f"  engine {e['id']}: task {st['task']} for {st.get('running_for', 0):.0f} s "
                             f"at {st['call']}")
    lines.append("")
    jobs = status["jobs"]
    lines.append(f"JOBS: {len(jobs)}" + (f" ({status['jobs_error']})" if status.get("jobs_error") else ""))
    if jobs:
        lines += _table(["JOB ID", "SYSTEM", "ROLE", "N", "STATE"],
                        [[j["id"], j["system"], j["role"], j["n"], j["state"]] for j in jobs], right={3})
    lines.append("")
    if status.get("pool"):
        from ..pool.control import render as render_pool

        lines += render_pool(status["pool"]) if "error" not in status["pool"] else [f"POOL: {status['pool']['error']}"]
        lines.append("")
    t = status["tasks"]
    if t:
        keys = [k for k in ("submitted", "finished", "pending", "unassigned") if k in t]
        keys += [k for k in t if k not in keys]
        lines.append("TASKS: " + ", ".join(f"{k} {t[k]}" for k in keys))
    else:
        lines.append("TASKS: unknown (controller not reachable)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..cli import CommandError
    from .which import resolve_cluster_id

    pd = profile_dir_from(args)
    cluster_id = resolve_cluster_id(pd, args.cluster_id, "status")
    if not pd.state_file(cluster_id).exists() and not pd.client_file(cluster_id).exists():
        raise CommandError(
            f"no cluster in profile {pd.name!r}" + (f" with cluster id {cluster_id!r}" if cluster_id else "")
            + " ('hpcpar list' shows running clusters)"
        )
    tty = sys.stdout.isatty()
    try:
        while True:
            status = gather(pd, cluster_id, args.timeout)
            if args.json:
                print(json.dumps(status, indent=None if args.watch else 1), flush=True)
            else:
                if args.watch is not None and tty:
                    sys.stdout.write("\x1b[H\x1b[2J")  # clear the screen between refreshes
                print(render(status), flush=True)
                if args.watch is not None and not tty:
                    print("", flush=True)
            if args.watch is None:
                return 0 if status["controller"]["reachable"] else 1
            time.sleep(max(0.1, args.watch))
    except KeyboardInterrupt:
        return 0
