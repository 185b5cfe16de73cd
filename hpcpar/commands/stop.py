"""``hpcpar stop``: stop a cluster from any process, using its state file.

Which cluster: as for every command (commands/which.py): the profile's only cluster
when --cluster-id is not given. A controller started by hand (``hpcpar controller``,
no state file) is stopped through its connection file: asked to shut down (with its
engines), or, when it no longer answers, signalled by the pid it recorded.
"""

from __future__ import annotations

import argparse
import os
import signal
import time

from . import add_profile_args, profile_dir_from
from .handstarted import where as _where


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


def stop_one(pd, cluster_id: str, wait_timeout: float = 60.0) -> str:
    """Stop the cluster from its state file, then cancel whatever its job ledger still holds
    (a start that was killed before it wrote its state), then wait (bounded) until the batch
    system has let go of every job. Returns a line for the user."""
    import sys

    from ..cluster import Cluster
    from ..launchers.build import stop_recorded_jobs, wait_released
    from ..launchers.ledger import read_jobs
    from ..pool.control import stop_manager

    stop_manager(pd, cluster_id)  # first: a pool manager would submit replacements
    path = pd.state_file(cluster_id)
    if not path.exists() and pd.client_file(cluster_id).exists() and not read_jobs(pd, cluster_id):
        return stop_hand_started(pd, cluster_id)
    records = read_jobs(pd, cluster_id)
    jobs = [r.job_id for r in records]
    if path.exists():
        Cluster.from_file(path).stop_cluster_sync()  # engines, controller, then the ledger
    stop_recorded_jobs(pd, cluster_id)
    _remove_stale_connection_files(pd, cluster_id)
    if records and wait_timeout > 0:
        held = wait_released(records, pd, cluster_id, wait_timeout, progress=lambda line: print(line, flush=True))
        if held:
            print(f"hpcpar stop: job(s) {', '.join(held)} cancelled but still held by the batch system after "
                  f"{wait_timeout:g} s; they leave by themselves (check with your scheduler's status command)",
                  file=sys.stderr)
    return f"stopped cluster ({_where(pd, cluster_id)})" + (f"; cancelled jobs {', '.join(jobs)}" if jobs else "")


def _remove_stale_connection_files(pd, cluster_id: str) -> None:
    """A controller killed hard leaves its connection files: once its cluster is stopped they
    would look like a dead controller started by hand to list, status and Client()."""
    from .handstarted import find, remove_stale

    hand = find(pd, cluster_id)
    if hand is not None and hand.alive is False:
        remove_stale(pd, cluster_id, hand)


def _wait_gone(pid: int | None, timeout: float) -> bool:
    from .handstarted import is_controller

    deadline = time.monotonic() + timeout
    while pid and is_controller(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not (pid and is_controller(pid))


def stop_hand_started(pd, cluster_id: str) -> str:
    """A controller with a connection file but no state file: shut it down (and its engines);
    one that is gone leaves stale connection files, which are removed."""
    from ..cli import CommandError
    from ..client import Client
    from .handstarted import find, is_controller, remove_stale

    hand = find(pd, cluster_id)
    assert hand is not None
    if hand.alive is False:
        removed = remove_stale(pd, cluster_id, hand)
        return (f"no controller was running ({_where(pd, cluster_id)}: the controller started by hand, "
                f"pid {hand.pid}, is gone); removed its stale {', '.join(removed) or 'files'}")
    pid = hand.pid
    local_pid = pid if pid and is_controller(pid) else None
    how = "asked to shut down"
    try:
        rc = Client(str(hand.client_file), timeout=5)
    except Exception as e:  # noqa: BLE001 - not answering: fall back to the recorded pid
        if local_pid is None:
            raise CommandError(f"the controller of {_where(pd, cluster_id)} does not answer ({e}) and is not "
                               f"a process of this machine (pid {pid} on {hand.host or 'an unknown host'}); "
                               f"stop it where it runs") from None
        os.kill(local_pid, signal.SIGTERM)
        how = f"sent SIGTERM (pid {local_pid}, not answering)"
    else:
        try:
            n = len(rc.ids)
            rc.shutdown(hub=True, block=True)
            how += f" with its {n} engines"
        finally:
            rc.close()
    if not _wait_gone(local_pid, 15.0):
        os.kill(local_pid, signal.SIGKILL)  # type: ignore[arg-type]
        how += "; killed after 15 s"
    return f"stopped the controller started by hand ({_where(pd, cluster_id)}): {how}"


def run(args: argparse.Namespace) -> int:
    from ..cli import CommandError
    from ..cluster import ClusterError
    from ..launchers import LauncherError
    from ..paths import all_profiles
    from .which import cluster_ids, resolve_cluster_id

    if args.on:
        from ..ssh.cli import stop_on

        return stop_on(args)
    if args.all:
        targets = [(pd, cid) for pd in all_profiles() for cid in cluster_ids(pd)]
        if not targets:
            print("no clusters")
    else:
        pd = profile_dir_from(args)
        cid = resolve_cluster_id(pd, args.cluster_id, "stop")
        if cid not in cluster_ids(pd):
            raise CommandError(
                f"no cluster to stop in profile {pd.name!r}"
                + (f" with cluster id {cid!r}" if cid else "")
                + " ('hpcpar list' shows running clusters)"
            )
        targets = [(pd, cid)]
    failed = []
    for pd, cid in targets:
        try:
            print(stop_one(pd, cid, args.wait_timeout), flush=True)
        except (ClusterError, LauncherError, CommandError) as e:
            failed.append(str(e))
    if failed:
        raise CommandError("; ".join(failed))
    return 0
