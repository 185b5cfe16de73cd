"""``hpcpar stop``: stop a cluster from any process, using its state file."""

from __future__ import annotations

import argparse

from . import add_profile_args, profile_dir_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stop", help="stop a running cluster")
    add_profile_args(p)
    p.add_argument("--all", action="store_true", help="stop every cluster of every profile")
    p.add_argument("--on", default=None, metavar="USER@HOST",
                   help="stop the cluster on this host over SSH (its engines, batch jobs and controller)")
    from ..ssh.cli import add_ssh_args

    add_ssh_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cli import CommandError
    from ..cluster import Cluster, ClusterError, running_clusters

    if args.on:
        from ..ssh.cli import stop_on

        return stop_on(args)
    if args.all:
        targets = [path for path, _ in running_clusters()]
    else:
        pd = profile_dir_from(args)
        path = pd.state_file(args.cluster_id)
        if not path.exists():
            raise CommandError(
                f"no cluster to stop in profile {pd.name!r}"
                + (f" with cluster id {args.cluster_id!r}" if args.cluster_id else "")
                + " ('hpcpar list' shows running clusters)"
            )
        targets = [path]
    for path in targets:
        try:
            Cluster.from_file(path).stop_cluster()
        except ClusterError as e:
            raise CommandError(str(e)) from None
        print(f"stopped cluster {path}")
    return 0
