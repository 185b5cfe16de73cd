"""``hpcpar start``: a controller and N engines; foreground (Ctrl-C stops) or --daemonize."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from . import add_profile_args, profile_dir_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("start", help="start a cluster (controller + engines)")
    add_profile_args(p)
    p.add_argument("-n", "--n", type=int, default=None, help="number of engines (default: CPU count)")
    p.add_argument("--engines", default="local", help="engine launcher (default: local)")
    p.add_argument("--controller", default="local", help="controller launcher (default: local)")
    p.add_argument("--ip", default=None, help="controller listen address ('*' for all interfaces)")
    p.add_argument("--scheme", default=None, help="load-balancing scheme (leastload, lru, twobin, weighted, plainrandom)")
    p.add_argument("--hwm", type=int, default=None, help="load-balanced tasks in flight per engine (0: unlimited)")
    p.add_argument("--db", default=None, choices=["sqlite", "memory", "none"], help="task database (default: sqlite)")
    p.add_argument("--restore", action="store_true",
                   help="restart a crashed controller of a running cluster: engines re-attach, old results stay")
    p.add_argument("--daemonize", action="store_true", help="return once the controller is up")
    p.add_argument("--wait", action="store_true", help="with --daemonize: also wait for all engines")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for engines")
    p.add_argument("--on", default=None, metavar="USER@HOST",
                   help="start the cluster on this host over SSH (e.g. the login node), then wait "
                   "for its engines through one tunnel; see docs/ssh.md")
    from ..ssh.cli import add_ssh_args

    add_ssh_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cli import CommandError
    from ..cluster import Cluster, ClusterError

    if args.n is not None and args.n < 0:
        raise CommandError("-n must be zero or more engines")
    if args.on:
        from ..ssh.cli import start_on

        return start_on(args)
    controller_args = []
    if args.ip:
        controller_args += ["--ip", args.ip]
    if args.scheme:
        controller_args += ["--scheme", args.scheme]
    if args.hwm is not None:
        controller_args += ["--hwm", str(args.hwm)]
    if args.db:
        controller_args += ["--db", args.db]
    pd = profile_dir_from(args)
    if args.restore:
        return _restore(pd, args.cluster_id, controller_args)
    cluster = Cluster(
        n=args.n,
        profile_dir=pd.path,
        cluster_id=args.cluster_id,
        engines=args.engines,
        controller=args.controller,
        controller_args=controller_args,
    )
    from ..config import ConfigError
    from ..launchers import LauncherError

    try:
        cluster.start_controller()
        if cluster.n:
            cluster.start_engines()
    except (ClusterError, LauncherError, ConfigError) as e:
        if cluster.state is not None and cluster.controller is not None:
            cluster.stop_cluster()  # the engines could not start: leave no controller behind
        raise CommandError(str(e)) from None
    where = f"profile {pd.name!r}" + (f", cluster id {args.cluster_id!r}" if args.cluster_id else "")
    if args.daemonize and not args.wait:
        print(f"cluster started in {where}: {cluster.n} engines starting; stop it with 'hpcpar stop'")
        return 0
    try:
        rc = cluster.connect_client()
        rc.wait_for_engines(cluster.n, timeout=args.timeout)
    except TimeoutError as e:
        if not args.daemonize:
            cluster.stop_cluster()
        raise CommandError(str(e)) from None
    rc.close()
    cluster._client = None
    print(f"cluster ready in {where}: {cluster.n} engines", flush=True)
    if args.daemonize:
        return 0
    return _foreground(cluster)


def _restore(pd, cluster_id: str, controller_args: list[str]) -> int:
    from ..cli import CommandError
    from ..cluster import Cluster, ClusterError

    path = pd.state_file(cluster_id)
    if not path.exists():
        raise CommandError(f"nothing to restore in profile {pd.name!r}: no cluster state ({path}); use plain 'hpcpar start'")
    try:
        cluster = Cluster.from_file(path)
        cluster.controller_args = controller_args
        cluster.restart_controller()
    except ClusterError as e:
        raise CommandError(str(e)) from None
    print(f"controller restored in profile {pd.name!r}; engines re-attach by themselves")
    return 0


def _foreground(cluster) -> int:
    """Keep running until Ctrl-C / SIGTERM, or until the controller goes away."""
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print("press Ctrl-C to stop the cluster", flush=True)
    while not stop["now"]:
        if not cluster.is_running():
            print("the controller exited; stopping the engines", file=sys.stderr)
            cluster.stop_cluster()
            return 1
        time.sleep(0.2)
    print("stopping the cluster...", flush=True)
    cluster.stop_cluster()
    return 0
