"""``hpcpar stop``: stop a cluster from any process, using its state file."""

from __future__ import annotations

import argparse

from . import add_profile_args, profile_dir_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stop", help="stop a running cluster")
    add_profile_args(p)
    p.add_argument("--all", action="store_true", help="stop every cluster of every profile")
    p.add_argument("--wait-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="wait at most this long until the batch system has let go of every job "
                   "(SGE 'dr', SLURM 'COMPLETING'); 0 = do not wait (default 60)")
    p.add_argument("--on", default=None, metavar="USER@HOST",
                   help="stop the cluster on this host over SSH (its engines, batch jobs and controller)")
    from ..ssh.cli import add_ssh_args

    add_ssh_args(p)
    p.set_defaults(func=run)


def _cluster_ids(pd) -> list[str]:
    """Cluster ids with a state file or a job ledger in this profile."""
    ids: dict[str, None] = {}
    if pd.run.is_dir():
        for prefix, paths in (("cluster", pd.run.glob("cluster*.json")), ("jobs", pd.run.glob("jobs*.json"))):
            for path in sorted(paths):
                rest = path.name[len(prefix):-len(".json")]
                if rest == "" or rest.startswith("-"):
                    ids[rest[1:]] = None
    return list(ids)


def stop_one(pd, cluster_id: str, wait_timeout: float = 60.0) -> str:
    """Stop the cluster from its state file, then cancel whatever its job ledger still holds
    (a start that was killed before it wrote its state), then wait (bounded) until the batch
    system has let go of every job. Returns a line for the user."""
    import sys

    from ..cluster import Cluster
    from ..launchers.build import stop_recorded_jobs, wait_released
    from ..launchers.ledger import read_jobs

    path = pd.state_file(cluster_id)
    records = read_jobs(pd, cluster_id)
    jobs = [r.job_id for r in records]
    if path.exists():
        Cluster.from_file(path).stop_cluster()  # engines, controller, then the ledger
    stop_recorded_jobs(pd, cluster_id)
    what = f"profile {pd.name!r}" + (f", cluster id {cluster_id!r}" if cluster_id else "")
    if records and wait_timeout > 0:
        held = wait_released(records, pd, cluster_id, wait_timeout, progress=lambda line: print(line, flush=True))
        if held:
            print(f"hpcpar stop: job(s) {', '.join(held)} cancelled but still held by the batch system after "
                  f"{wait_timeout:g} s; they leave by themselves (check with your scheduler's status command)",
                  file=sys.stderr)
    return f"stopped cluster ({what})" + (f"; cancelled jobs {', '.join(jobs)}" if jobs else "")


def run(args: argparse.Namespace) -> int:
    from ..cli import CommandError
    from ..cluster import ClusterError
    from ..launchers import LauncherError
    from ..launchers.ledger import ledger_path
    from ..paths import all_profiles

    if args.on:
        from ..ssh.cli import stop_on

        return stop_on(args)
    if args.all:
        targets = [(pd, cid) for pd in all_profiles() for cid in _cluster_ids(pd)]
        if not targets:
            print("no clusters")
    else:
        pd = profile_dir_from(args)
        if not pd.state_file(args.cluster_id).exists() and not ledger_path(pd, args.cluster_id).exists():
            raise CommandError(
                f"no cluster to stop in profile {pd.name!r}"
                + (f" with cluster id {args.cluster_id!r}" if args.cluster_id else "")
                + " ('hpcpar list' shows running clusters)"
            )
        targets = [(pd, args.cluster_id)]
    failed = []
    for pd, cid in targets:
        try:
            print(stop_one(pd, cid, args.wait_timeout), flush=True)
        except (ClusterError, LauncherError) as e:
            failed.append(str(e))
    if failed:
        raise CommandError("; ".join(failed))
    return 0
