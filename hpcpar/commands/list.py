"""``hpcpar list``: every cluster that ``status`` and ``stop`` can address, of every profile.

The same clusters as commands/which.py finds: those ``hpcpar start`` started (a state
file), controllers started by hand (a connection file only: commands/handstarted.py, shown
with ``by hand`` and whether the process is alive) and batch jobs of a start that died
before it wrote its state (a job ledger only). A dead entry comes with the command that
cleans it up.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from . import add_profile_only, profile_dir_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list clusters of every profile (or of one: --profile)")
    add_profile_only(p, help="only the clusters of this profile")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _row(pd: Any, cluster_id: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "profile": pd.name, "cluster_id": cluster_id, "started": "hpcpar start", "engines": None,
        "engine_processes_alive": None, "controller_pid": None, "controller_jobs": [], "running": None,
        "launcher": None, "controller_launcher": None, "jobs": [], "hint": None,
    }
    row.update(fields)
    return row


def _started(pd: Any, cluster_id: str) -> dict[str, Any]:
    """A cluster with a state file (started by ``hpcpar start`` or ``Cluster()``)."""
    from ..cluster import Cluster
    from ..launchers.ledger import read_jobs
    from .handstarted import selector, where

    jobs = [r.job_id for r in read_jobs(pd, cluster_id)]
    try:
        cluster = Cluster.from_file(pd.state_file(cluster_id))
    except Exception as e:  # noqa: BLE001 - shown, not raised: the other clusters are still listed
        return _row(pd, cluster_id, jobs=jobs,
                    hint=f"cannot read its state file ({e}); 'hpcpar stop {selector(pd, cluster_id)}' cleans up")
    ctl = cluster.controller
    pids = [p.pid for p in getattr(ctl, "processes", [])]
    try:
        running = cluster.is_running()
    except Exception:  # noqa: BLE001 - a batch system that cannot be asked right now
        running = None
    sel = selector(pd, cluster_id)
    hint = (f"the controller of {where(pd, cluster_id)} is not running: 'hpcpar start {sel} --restore' brings "
            f"it back to its engines, 'hpcpar stop {sel}' cleans up") if running is False else None
    return _row(
        pd, cluster_id, jobs=jobs, running=running, engines=cluster.n, hint=hint,
        engine_processes_alive=sum(len(getattr(s, "alive", lambda: [])()) for s in cluster.engine_sets),
        controller_pid=pids[0] if pids else None,
        controller_jobs=list(getattr(ctl, "job_ids", []) or []),
        launcher=cluster.engine_launcher if not cluster.engine_sets else cluster.engine_sets[0].name,
        controller_launcher=ctl.name if ctl is not None else cluster.controller_launcher,
    )


def _by_hand(pd: Any, cluster_id: str, hand: Any) -> dict[str, Any]:
    from .handstarted import dead_message, engine_count

    engines = engine_count(hand) if hand.alive is not False else None
    running = hand.alive if hand.alive is not None else (engines is not None or None)
    return _row(pd, cluster_id, started="by hand", running=running, engines=engines,
                controller_pid=hand.pid, launcher="by hand", controller_launcher="by hand",
                hint=dead_message(pd, cluster_id, hand) if running is False else None)


def _ledger_only(pd: Any, cluster_id: str) -> dict[str, Any] | None:
    from ..launchers.ledger import read_jobs
    from .handstarted import selector

    records = read_jobs(pd, cluster_id)
    if not records:
        return None
    return _row(pd, cluster_id, started="jobs only", launcher=records[0].system,
                controller_launcher=records[0].system, jobs=[r.job_id for r in records],
                hint=f"batch jobs of a start that ended before it wrote its state; "
                     f"'hpcpar stop {selector(pd, cluster_id)}' cancels them")


def rows(profiles: list[Any]) -> list[dict[str, Any]]:
    from .handstarted import find
    from .which import cluster_ids

    found = []
    for pd in profiles:
        for cid in cluster_ids(pd):
            hand = find(pd, cid)
            if pd.state_file(cid).exists():
                found.append(_started(pd, cid))
            elif hand is not None:
                found.append(_by_hand(pd, cid, hand))
            elif (row := _ledger_only(pd, cid)) is not None:
                found.append(row)
    return found


def run(args: argparse.Namespace) -> int:
    from ..paths import all_profiles
    from .status import _table

    chosen = bool(args.profile or args.profile_dir)
    listed = rows([profile_dir_from(args)] if chosen else all_profiles())
    if args.json:
        print(json.dumps(listed, indent=1))
        return 0
    if not listed:
        print("no clusters" + (f" in profile {args.profile or args.profile_dir!r}" if chosen else ""))
        return 0
    table = []
    for r in listed:
        controller = r["controller_pid"] or (f"job {r['controller_jobs'][0]}" if r["controller_jobs"] else None)
        running = "?" if r["running"] is None else str(r["running"]).lower()
        launcher = r["launcher"]
        if r["started"] == "hpcpar start" and r["controller_launcher"] not in ("local", None):
            launcher = f"{launcher}+{r['controller_launcher']}"
        elif r["started"] == "jobs only":
            launcher = f"{launcher} (jobs only)"
        engines = "?" if r["engines"] is None and r["running"] is not False else r["engines"]
        table.append([r["profile"], r["cluster_id"], engines, controller, running, launcher,
                      ", ".join(r["jobs"]) or None])
    print("\n".join(_table(["PROFILE", "CLUSTER ID", "ENGINES", "PID", "RUNNING", "LAUNCHER", "JOBS"],
                           table, right={2, 3})))
    for r in listed:
        if r["hint"]:
            print(f"note: {r['hint']}")
    return 0
