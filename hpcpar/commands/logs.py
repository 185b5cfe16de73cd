"""``hpcpar logs``: an engine's output (fetched over SSH for engines on other hosts)."""

from __future__ import annotations

import argparse
import sys

from . import add_profile_args, profile_dir_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("logs", help="show an engine's (or the controller's) output")
    add_profile_args(p)
    p.add_argument("engine", nargs="?", type=int, default=None,
                   help="engine process number (see --list); default: list them")
    p.add_argument("--set", type=int, default=0, help="engine set (0 = the first 'hpcpar start' set)")
    p.add_argument("--controller", action="store_true", help="the controller's log")
    p.add_argument("--list", action="store_true", help="list engine processes: host, pid, alive, log")
    p.add_argument("--tail", type=int, default=None, help="only the last N lines")
    p.set_defaults(func=run)


def _tail(text: str, n: int | None) -> str:
    if not n:
        return text
    return "".join(text.splitlines(keepends=True)[-n:])


def run(args: argparse.Namespace) -> int:
    from ..cli import CommandError
    from ..cluster import Cluster, ClusterError
    from ..launchers import LauncherError
    from ..ssh.errors import SSHError

    pd = profile_dir_from(args)
    if args.controller:
        path = pd.log_file("controller", args.cluster_id)
        try:
            sys.stdout.write(_tail(path.read_text(errors="replace"), args.tail))
        except OSError as e:
            raise CommandError(f"no controller log {path} ({e.strerror})") from None
        return 0
    state = pd.state_file(args.cluster_id)
    if not state.exists():
        raise CommandError(f"no cluster in profile {pd.name!r} ('hpcpar list' shows running clusters)")
    try:
        cluster = Cluster.from_file(state)
    except (ClusterError, LauncherError) as e:
        raise CommandError(str(e)) from None
    if not cluster.engine_sets:
        raise CommandError("this cluster has no engine sets")
    if not 0 <= args.set < len(cluster.engine_sets):
        raise CommandError(f"--set must be 0..{len(cluster.engine_sets) - 1}")
    launcher = cluster.engine_sets[args.set]
    try:
        if args.list or args.engine is None:
            _list(cluster, pd)
            return 0
        if hasattr(launcher, "read_log"):
            sys.stdout.write(launcher.read_log(args.engine, tail=args.tail))
            return 0
        path = pd.log_file(f"engine-{args.set}-{args.engine}", cluster.cluster_id)
        sys.stdout.write(_tail(path.read_text(errors="replace"), args.tail))
    except (LauncherError, SSHError) as e:
        raise CommandError(str(e)) from None
    except OSError as e:
        raise CommandError(f"cannot read the log: {e}") from None
    return 0


def _list(cluster, pd) -> None:
    print(f"{'SET':>3} {'ENGINE':>6}  {'HOST':<24} {'PID':>8}  {'ALIVE':<5}  LOG")
    for i, launcher in enumerate(cluster.engine_sets):
        procs = getattr(launcher, "processes", [])
        if hasattr(launcher, "alive_by_host"):
            alive = launcher.alive_by_host()
            for p in procs:
                print(f"{i:>3} {p.index:>6}  {p.host:<24} {p.pid:>8}  {str(p.pid in alive.get(p.host, [])).lower():<5}  {p.log}")
            continue
        for j, p in enumerate(procs):
            log = pd.log_file(f"engine-{i}-{j}", cluster.cluster_id)
            print(f"{i:>3} {j:>6}  {'localhost':<24} {p.pid:>8}  {str(p.alive()).lower():<5}  {log}")
