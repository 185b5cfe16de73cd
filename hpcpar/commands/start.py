"""``hpcpar start``: a controller and N engines; foreground (Ctrl-C stops) or --daemonize."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from . import add_profile_args, count, profile_dir_from, scheme, seconds


def register(sub: argparse._SubParsersAction) -> None:
    from .render import add_config_args

    p = sub.add_parser("start", help="start a cluster (controller + engines)")
    add_profile_args(p)
    p.add_argument("-n", "--n", type=count(0, "-n"), default=None,
                   help="number of engines; 0 = a controller only (default: [cluster] n, else one per "
                   "CPU for local engines)")
    add_config_args(p)  # --engines --controller --queue --walltime --account --ip --mode --set
    p.add_argument("--scheme", default=None, type=scheme,
                   help="load-balancing scheme (leastload, lru, twobin, weighted, plainrandom)")
    p.add_argument("--hwm", type=count(0, "--hwm"), default=None,
                   help="load-balanced tasks in flight per engine (0: unlimited)")
    p.add_argument("--forwarders", type=count(0, "--forwarders"), default=None, metavar="K",
                   help="relay the local engines through K forwarders (one broadcast copy per forwarder; "
                   "default: [cluster] forwarders, 0)")
    p.add_argument("--db", default=None, choices=["sqlite", "memory", "none"], help="task database (default: sqlite)")
    p.add_argument("--restore", action="store_true",
                   help="restart a crashed controller of a running cluster: engines re-attach, old results stay")
    p.add_argument("--force", action="store_true",
                   help="start afresh even if the profile's controller died while its engines live "
                   "(they are stopped; without --force, start refuses and names --restore)")
    p.add_argument("--daemonize", action="store_true",
                   help="return once the controller is up and the engine jobs are submitted and recorded")
    p.add_argument("--wait", action="store_true", help="with --daemonize: also wait for all engines")
    p.add_argument("--min", type=int, default=None, dest="pool_min", metavar="N",
                   help="an elastic pool of batch engines: never fewer than N (with --max; -n is the start size)")
    p.add_argument("--max", type=int, default=None, dest="pool_max", metavar="N",
                   help="an elastic pool of batch engines: never more than N; grows under a backlog of "
                   "load-balanced tasks, shrinks when engines idle (docs/launchers.md, Elastic pools)")
    p.add_argument("--foreground", action="store_true",
                   help="stay until Ctrl-C (which stops the cluster) also with batch engines; the default "
                   "for local engines (batch engines live in the queue: start returns once they are up)")
    p.add_argument("--timeout", type=seconds, default=120.0,
                   help="seconds to wait for the engines (time batch jobs spend queued does not count)")
    p.add_argument("--on", default=None, metavar="USER@HOST",
                   help="start the cluster on this host over SSH (e.g. the login node), then wait "
                   "for its engines through one tunnel; see docs/ssh.md")
    from ..ssh.cli import add_ssh_args

    add_ssh_args(p)
    p.set_defaults(func=run)


class Hangup(KeyboardInterrupt):
    """The terminal of a foreground start closed (SIGHUP: the window, or the SSH session to
    the login node, went away): stop the cluster and cancel its jobs, as Ctrl-C does."""


def _on_hangup(signum, frame) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):  # nobody reads them any more; writing to a hung-up tty fails
        os.dup2(devnull, fd)
    raise Hangup()


def config_problem(command: str, e) -> int:
    """Print every configuration problem; nothing was started or submitted."""
    print(f"hpcpar {command}: invalid configuration, nothing was started:", file=sys.stderr)
    for problem in e.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    from ..cli import CommandError
    from ..cluster import Cluster, ClusterError
    from ..config import ConfigError
    from ..launchers import LauncherError
    from .checks import check_local_bind
    from .render import cli_overrides

    if args.wait and not args.daemonize:
        raise CommandError("--wait only goes with --daemonize (a foreground start always waits for its "
                           "engines): use 'hpcpar start --daemonize --wait', or leave --wait out")
    if args.on:
        from ..ssh.cli import start_on

        return start_on(args)
    controller_args = []
    if args.scheme:
        controller_args += ["--scheme", args.scheme]
    if args.hwm is not None:
        controller_args += ["--hwm", str(args.hwm)]
    if args.db:
        controller_args += ["--db", args.db]
    import logging

    from ..progress import LiveLine

    live = LiveLine()
    if args.log_level != "DEBUG":  # the live line says it already; the log would repeat each step
        logging.getLogger("hpcpar.cluster").setLevel(logging.WARNING)
    pd = profile_dir_from(args)
    if args.restore:
        return _restore(pd, args.cluster_id, controller_args)
    try:
        overrides = cli_overrides(args)
        overrides.pop("cluster.n", None)  # given as n: an explicit -n 0 starts no engines
        if args.forwarders is not None:
            overrides["cluster.forwarders"] = args.forwarders
        pool = args.pool_min is not None or args.pool_max is not None
        cluster = Cluster(n=0 if pool else args.n, profile_dir=pd.path, cluster_id=args.cluster_id,
                          controller_args=controller_args, progress=live, shutdown_atexit=False,
                          override_source="command line", **overrides)
        cluster.pool_managed = pool  # the pool submits the engines: no -n needed here
        cluster.force_start = args.force  # over the live engines of a controller that died
        cluster.check()
        if cluster.controller_launcher == "local":
            why = check_local_bind(cluster.config["controller.ip"], cluster.config.source_of("controller.ip"))
            if why:
                raise ConfigError([why])
    except ConfigError as e:
        return config_problem("start", e)
    except (ClusterError, LauncherError, ValueError) as e:
        raise CommandError(str(e)) from None
    if not args.daemonize:  # --daemonize is how a cluster outlives its terminal
        signal.signal(signal.SIGHUP, _on_hangup)
    where = f"profile {pd.name!r}" + (f", cluster id {cluster.cluster_id!r}" if cluster.cluster_id else "")
    stop_hint = f"hpcpar stop --profile {pd.name}" + (f" --cluster-id {cluster.cluster_id}" if cluster.cluster_id else "")
    if args.pool_min is not None or args.pool_max is not None:
        return _start_pool(args, cluster, where, stop_hint)
    try:
        cluster.start_cluster_sync()
    except (ClusterError, LauncherError, ConfigError) as e:
        raise CommandError(str(e)) from None
    except KeyboardInterrupt:
        live.done()
        print("stopping the cluster...", flush=True)
        cluster._stop_quietly()
        return 130
    where = f"profile {pd.name!r}" + (f", cluster id {cluster.cluster_id!r}" if cluster.cluster_id else "")
    stop_hint = f"hpcpar stop --profile {pd.name}" + (f" --cluster-id {cluster.cluster_id}" if cluster.cluster_id else "")
    if args.daemonize and not args.wait:
        jobs = [j for s in cluster.engine_sets for j in getattr(s, "job_ids", [])]
        what = f"jobs {', '.join(jobs)} submitted and recorded" if jobs else "starting"
        print(f"cluster started in {where}: {cluster.n} engines {what}; stop it with '{stop_hint}'", flush=True)
        return 0
    try:
        cluster.wait_for_engines_sync(timeout=args.timeout)
    except (ClusterError, LauncherError) as e:  # every engine set ended: nothing left to wait for
        live.done()
        cluster._stop_quietly()
        raise CommandError(f"{e}\nthe cluster was stopped") from None
    except TimeoutError as e:
        live.done()
        if not args.daemonize:
            cluster._stop_quietly()
        raise CommandError(str(e) + ("" if not args.daemonize else f"; the cluster keeps starting ('{stop_hint}' stops it)")) from None
    except KeyboardInterrupt:
        live.done()
        if args.daemonize:
            print(f"interrupted; the cluster keeps starting ('{stop_hint}' stops it)", file=sys.stderr)
            return 130
        print("stopping the cluster...", flush=True)
        cluster._stop_quietly()
        return 130
    cluster._close_client()
    print(f"cluster ready in {where}: {cluster.n} engines", flush=True)
    if args.daemonize:
        return 0
    if not args.foreground and any(getattr(s, "job_ids", None) for s in cluster.engine_sets):
        # Batch engines need no process here: return, as the docs promise, with the way to stop.
        print(f"the engines run as batch jobs; stop them with '{stop_hint}'", flush=True)
        return 0
    return _foreground(cluster)


def _start_pool(args: argparse.Namespace, cluster, where: str, stop_hint: str) -> int:
    """The controller, then an adaptive pool between --min and --max whose manager submits
    the first -n engines (default --min) as whole jobs; return once they registered."""
    from ..cli import CommandError
    from ..cluster import ClusterError
    from ..config import ConfigError
    from ..launchers import LauncherError
    from ..pool import control
    from .scale import wait_for_engines

    config = cluster.config
    low = args.pool_min if args.pool_min is not None else int(config["pool.min"])
    high = args.pool_max if args.pool_max is not None else max(int(config["pool.max"]), low)
    first = args.n if args.n is not None else low
    if not 0 <= low <= high or high < 1 or not low <= first <= high:
        raise CommandError(f"an elastic pool needs 0 <= --min <= -n <= --max and --max >= 1 "
                           f"(got --min {low}, -n {first}, --max {high})")
    try:
        control.new_pool(cluster.profile_dir, cluster.cluster_id, config)  # refuses what cannot be a pool
        cluster.start_cluster_sync(0)  # the controller only: the pool submits the engines
        control.adapt(cluster.profile_dir, cluster.cluster_id, low, high, config=config, target=first)
    except (ClusterError, LauncherError, ConfigError) as e:
        cluster._stop_quietly()
        raise CommandError(str(e)) from None
    print(f"pool started in {where}: adaptive between {low} and {high} {config['cluster.engines']} engines, "
          f"{first} to start with; stop it with '{stop_hint}'", flush=True)
    if args.daemonize and not args.wait:
        return 0
    try:
        wait_for_engines(cluster.profile_dir, cluster.cluster_id, first, args.timeout,
                         say=cluster.progress or (lambda line: print(line, flush=True)))
    except KeyboardInterrupt:
        print(f"interrupted; the pool keeps starting ('{stop_hint}' stops it)", file=sys.stderr)
        return 130
    print(f"cluster ready in {where}: {first} engines (pool {low}-{high})", flush=True)
    return 0


def _restore(pd, cluster_id: str, controller_args: list[str]) -> int:
    from ..cli import CommandError
    from ..cluster import Cluster, ClusterError
    from ..config import ConfigError
    from ..launchers import LauncherError

    path = pd.state_file(cluster_id)
    if not path.exists():
        raise CommandError(f"nothing to restore in profile {pd.name!r}: no cluster state ({path}); use plain 'hpcpar start'")
    try:
        cluster = Cluster.from_file(path)
        cluster.controller_args = controller_args
        cluster.restart_controller_sync()
    except (ClusterError, LauncherError, ConfigError) as e:
        raise CommandError(str(e)) from None
    print(f"controller restored in profile {pd.name!r}; engines re-attach by themselves")
    return 0


def _foreground(cluster) -> int:
    """Keep running until Ctrl-C / SIGTERM / SIGHUP, or until the controller goes away."""
    stop = {"now": False}

    def on_signal(signum, frame):
        if signum == signal.SIGHUP:
            devnull = os.open(os.devnull, os.O_WRONLY)
            for fd in (1, 2):
                os.dup2(devnull, fd)
        stop["now"] = True

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    print("press Ctrl-C to stop the cluster (closing this terminal stops it too; --daemonize keeps "
          "a cluster running without one)", flush=True)
    while not stop["now"]:
        if not cluster.is_running():
            print("the controller exited; stopping the engines", file=sys.stderr)
            cluster._stop_quietly()
            return 1
        time.sleep(0.2)
    print("stopping the cluster...", flush=True)
    cluster._stop_quietly()
    return 0
