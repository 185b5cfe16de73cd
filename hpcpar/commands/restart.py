"""``hpcpar restart --engines [SET ...]``: stop and start again a running cluster's engine
sets (default: all), from any shell. Each set comes back with the same id and size; an MPI
set's ranks get their old engine ids back, so a job hung in a collective is recovered in
one step (``Cluster.restart_engines`` does the same from Python)."""

from __future__ import annotations

import argparse

from . import add_profile_args, profile_dir_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restart", help="restart a running cluster's engine sets (same ids for MPI sets)")
    add_profile_args(p)
    p.add_argument("--engines", nargs="*", default=None, metavar="SET",
                   help="restart these engine sets (ids from 'hpcpar status'); none named: all of them")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for the old engines to leave and the new ones to register (default 120)")
    p.add_argument("--no-wait", action="store_true", help="return once the sets are restarted, before they register")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cli import CommandError
    from ..cluster import Cluster, ClusterError
    from ..launchers import LauncherError

    if args.engines is None:
        raise CommandError("what to restart? 'hpcpar restart --engines' restarts every engine set "
                           "('--engines SET ...' only those)")
    from .which import resolve_cluster_id

    pd = profile_dir_from(args)
    cid = resolve_cluster_id(pd, args.cluster_id, "restart")
    try:
        cluster = Cluster.from_file(profile_dir=pd.path, cluster_id=cid)
        cluster.progress = lambda line: print(line, flush=True)
        sets = args.engines or None
        before = cluster.engine_ids_by_set()
        wanted = sets or list(before)
        cluster.restart_engines_sync(sets, timeout=args.timeout)
        if not args.no_wait:
            total = sum(len(ids) for ids in before.values())
            cluster.wait_for_engines_sync(total, timeout=args.timeout)
            after = cluster.engine_ids_by_set()
            for set_id in wanted:
                print(f"engine set {set_id}: engines {before.get(set_id, [])} -> {after.get(set_id, [])}", flush=True)
    except (ClusterError, LauncherError, TimeoutError) as e:
        raise CommandError(str(e)) from None
    return 0
