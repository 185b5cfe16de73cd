"""``hpcpar controller``: run a controller in the foreground (what launchers start)."""

from __future__ import annotations

import argparse

from . import add_profile_args, bind_address, count, profile_dir_from, scheme, seconds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("controller", help="run a controller in the foreground")
    add_profile_args(p)
    p.add_argument("--ip", default="127.0.0.1", type=bind_address, help="address to listen on for clients ('*' for all)")
    p.add_argument("--port", type=int, default=0, help="client port (0: pick a free one)")
    p.add_argument("--engine-ip", default=None, type=bind_address, help="address to listen on for engines (default: --ip)")
    p.add_argument("--engine-port", type=int, default=0, help="engine port (0: pick a free one)")
    p.add_argument("--location", default=None,
                   help="address or host name engines and clients should use (advertised first)")
    p.add_argument("--heartbeat-interval", type=seconds, default=1.0, help="seconds between engine heartbeats")
    p.add_argument("--heartbeat-timeout", type=seconds, default=6.0,
                   help="seconds without a heartbeat before an engine is declared dead")
    p.add_argument("--scheme", default="leastload", type=scheme, help="load-balancing scheme")
    p.add_argument("--hwm", type=count(0, "--hwm"), default=1, help="load-balanced tasks in flight per engine (0: unlimited)")
    p.add_argument("--max-message-size", type=int, default=None,
                   help="largest accepted frame in bytes (-1: no limit; default 2 GiB)")
    p.add_argument("--transport", default="auto", choices=["auto", "curve", "hmac"],
                   help="auto: CurveZMQ when listening beyond loopback, else HMAC-signed messages only")
    p.add_argument("--replay-window", type=seconds, default=None,
                   help="signed messages older than this many seconds are dropped as replays (default 300)")
    p.add_argument("--db", default="sqlite", choices=["sqlite", "memory", "none"],
                   help="where the hub records tasks (default: sqlite in the profile directory)")
    p.add_argument("--db-store-limit", type=int, default=8 << 20,
                   help="requests/results larger than this many bytes are not stored in the task database")
    p.add_argument("--dependency-memory", type=int, default=10_000,
                   help="finished tasks kept in memory for dependency checks (older: from the task database)")
    p.add_argument("--restore", action="store_true",
                   help="restart after a crash: same key, ports and task database; engines re-attach")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cli import CommandError
    from ..controller.app import ControllerConfig, run_controller

    if args.heartbeat_timeout <= args.heartbeat_interval:
        raise CommandError("--heartbeat-timeout must be longer than --heartbeat-interval")
    config = ControllerConfig(
        profile_dir=profile_dir_from(args).create(),
        cluster_id=args.cluster_id,
        ip=args.ip,
        port=args.port,
        engine_ip=args.engine_ip,
        engine_port=args.engine_port,
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_timeout=args.heartbeat_timeout,
        scheme=args.scheme,
        hwm=args.hwm,
        transport=args.transport,
        db=args.db,
        db_store_limit=args.db_store_limit,
        restore=args.restore,
        dependency_memory=max(1, args.dependency_memory),
    )
    if args.max_message_size is not None:
        config.max_message_size = args.max_message_size
    if args.replay_window is not None:
        if args.replay_window < 1:
            raise CommandError("--replay-window must be at least 1 second")
        config.replay_window = args.replay_window
    if args.location:
        config.location = config.advertise = args.location
    return run_controller(config)
