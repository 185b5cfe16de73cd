"""``hpcpar list``: clusters of every profile, from their state files."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list clusters of every profile")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cluster import running_clusters
    from ..paths import ProfileDir

    rows = []
    for _path, cluster in running_clusters():
        ctl = cluster.controller
        pids = [p.pid for p in getattr(ctl, "processes", [])]
        alive_engines = sum(len(getattr(s, "alive", lambda: [])()) for s in cluster.engine_sets)
        rows.append({
            "profile": ProfileDir(cluster.profile_dir.path).name,
            "cluster_id": cluster.cluster_id,
            "engines": cluster.n,
            "engine_processes_alive": alive_engines,
            "controller_pid": pids[0] if pids else None,
            "running": cluster.is_running(),
            "launcher": cluster.engine_launcher if not cluster.engine_sets else cluster.engine_sets[0].name,
        })
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no clusters")
        return 0
    header = f"{'PROFILE':<16} {'CLUSTER ID':<12} {'ENGINES':>7} {'PID':>8} {'RUNNING':<8} LAUNCHER"
    print(header)
    for r in rows:
        print(f"{r['profile']:<16} {r['cluster_id'] or '-':<12} {r['engines']:>7} "
              f"{r['controller_pid'] or '-':>8} {str(r['running']).lower():<8} {r['launcher']}")
    return 0
