"""``hpcpar list``: clusters of every profile, from their state files."""

from __future__ import annotations

import argparse
import json

from . import add_profile_only, profile_dir_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list clusters of every profile (or of one: --profile)")
    add_profile_only(p, help="only the clusters of this profile")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cluster import running_clusters
    from ..launchers.ledger import read_jobs
    from ..paths import ProfileDir

    only = profile_dir_from(args).path.resolve() if (args.profile or args.profile_dir) else None
    rows = []
    for _path, cluster in running_clusters():
        if only is not None and cluster.profile_dir.path.resolve() != only:
            continue
        ctl = cluster.controller
        pids = [p.pid for p in getattr(ctl, "processes", [])]
        alive_engines = sum(len(getattr(s, "alive", lambda: [])()) for s in cluster.engine_sets)
        try:
            running = cluster.is_running()
        except Exception:  # noqa: BLE001 - a batch system that cannot be asked right now
            running = None
        rows.append({
            "profile": ProfileDir(cluster.profile_dir.path).name,
            "cluster_id": cluster.cluster_id,
            "engines": cluster.n,
            "engine_processes_alive": alive_engines,
            "controller_pid": pids[0] if pids else None,
            "controller_jobs": list(getattr(ctl, "job_ids", []) or []),
            "running": running,
            "launcher": cluster.engine_launcher if not cluster.engine_sets else cluster.engine_sets[0].name,
            "controller_launcher": ctl.name if ctl is not None else cluster.controller_launcher,
            "jobs": [r.job_id for r in read_jobs(cluster.profile_dir, cluster.cluster_id)],
        })
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no clusters" + (f" in profile {args.profile or args.profile_dir!r}" if only is not None else ""))
        return 0
    header = f"{'PROFILE':<16} {'CLUSTER ID':<12} {'ENGINES':>7} {'PID':>8} {'RUNNING':<8} {'LAUNCHER':<10} JOBS"
    print(header)
    for r in rows:
        controller = r["controller_pid"] or (f"job {r['controller_jobs'][0]}" if r["controller_jobs"] else "-")
        running = "?" if r["running"] is None else str(r["running"]).lower()
        launcher = r["launcher"] if r["controller_launcher"] == "local" else f"{r['launcher']}+{r['controller_launcher']}"
        print(f"{r['profile']:<16} {r['cluster_id'] or '-':<12} {r['engines']:>7} "
              f"{controller:>8} {running:<8} {launcher:<10} {', '.join(r['jobs']) or '-'}")
    return 0
