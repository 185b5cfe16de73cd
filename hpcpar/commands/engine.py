"""``hpcpar engine``: run one engine in the foreground (what launchers start)."""

from __future__ import annotations

import argparse

from . import add_profile_args, profile_dir_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("engine", help="run one engine in the foreground")
    add_profile_args(p)
    p.add_argument("--file", default=None, help="engine connection file (default: the profile's, "
                   "or $HPCPAR_CONNECTION_INFO)")
    p.add_argument("--via-local-forwarder", action="store_true",
                   help="connect through the forwarder running on this host: wait for its file "
                   "<profile>/security/hpcpar[-ID]-forwarder-<host name>.json (forwarder_per_node job scripts)")
    p.add_argument("--id", type=int, default=None, help="ask for this engine id")
    p.add_argument("--mpi", action="store_true", help="join MPI.COMM_WORLD; engine id = MPI rank")
    p.add_argument("--wait-for-file", type=float, default=30.0, help="seconds to wait for the connection file")
    p.add_argument("--connect-timeout", type=float, default=60.0, help="seconds to keep trying to register")
    p.add_argument("--controller-timeout", type=float, default=60.0,
                   help="exit when the controller has been silent this many seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cli import CommandError
    from ..connection import ConnectionFileError
    from ..engine.app import (
        Engine,
        EngineOptions,
        RegistrationError,
        init_mpi,
        load_engine_connection,
    )

    if args.controller_timeout < 10:
        raise CommandError("--controller-timeout must be at least 10 s: the controller answers "
                           "heartbeats every few seconds, not every beat")
    if args.via_local_forwarder and args.file:
        raise CommandError("give --file or --via-local-forwarder, not both")
    try:
        if args.via_local_forwarder:
            info = _local_forwarder_info(profile_dir_from(args), args.cluster_id, args.wait_for_file)
        else:
            info = load_engine_connection(args.file, profile_dir_from(args), args.cluster_id, args.wait_for_file)
    except ConnectionFileError as e:
        raise CommandError(str(e)) from None
    options = EngineOptions(
        requested_id=args.id,
        connect_timeout=args.connect_timeout,
        controller_timeout=args.controller_timeout,
        mpi=args.mpi,
    )
    engine = Engine(info, options)
    if args.mpi:
        init_mpi(engine)
    try:
        return engine.run()
    except RegistrationError as e:
        raise CommandError(str(e)) from None


def _local_forwarder_info(profile_dir, cluster_id: str, wait: float):
    """The connection file of the forwarder on this host, waited for: it starts with the engines."""
    import socket
    import time

    from ..connection import ConnectionFileError, ConnectionInfo
    from .forwarder import forwarder_file

    path = forwarder_file(profile_dir, cluster_id, socket.gethostname())
    deadline = time.monotonic() + wait
    stale = False
    while True:
        try:
            info = ConnectionInfo.load(path)
        except ConnectionFileError:
            info = None  # not written yet (or being replaced)
        stale = info is not None and not _alive(info.extra.get("forwarder_pid"))
        if info is not None and not stale:
            return info
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    what = "only a file left by a forwarder that is gone" if stale else "nothing"
    raise ConnectionFileError(
        f"no forwarder on this host ({socket.gethostname()}) wrote {path} within {wait:g} s ({what} there): "
        "start 'hpcpar forwarder' on this node first (see its log), or raise --wait-for-file"
    )


def _alive(pid: object) -> bool:
    """Is ``pid`` a live process on this host? Files without a pid (older forwarders) count as live."""
    from ..launchers.process import process_start_time

    return not isinstance(pid, int) or process_start_time(pid) is not None
